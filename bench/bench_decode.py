"""Peak memory and time of the memory-bounded SAME decode of long audio (random weights).

    .venv/bin/python bench/bench_decode.py [--config medium.json] [--seconds 360] [--chunk 128 --overlap 32]

Parameters are initialised in place, so building costs about the weights; the process peak RSS
(``ru_maxrss``) after building is the baseline, and the peak after the decode shows what decoding
adds on top of the weights.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from pathlib import Path

import torch

from sa3_engine.models.same import SAMEAutoencoder

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "configs" / "medium.json"


def peak_rss_mib() -> float:
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--config", type=Path, default=DEFAULT_CONFIG, help="full SA3 or standalone SAME config"
    )
    parser.add_argument("--seconds", type=float, default=360.0)
    parser.add_argument("--chunk", type=int, default=128, help="chunk size in latent frames")
    parser.add_argument("--overlap", type=int, default=32, help="overlap in latent frames")
    args = parser.parse_args()

    torch.manual_seed(0)
    model = SAMEAutoencoder.from_config(json.loads(args.config.read_text())).eval()
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    frames = math.ceil(args.seconds * model.sample_rate / model.downsampling_ratio)
    latents = torch.randn(1, model.latent_dim, frames)
    baseline = peak_rss_mib()
    print(
        f"config {args.config.name}: weights {weights:.0f} MiB, {frames} latent frames ({args.seconds:g} s)"
    )
    print(f"peak RSS after building: {baseline:.0f} MiB", flush=True)

    started = time.perf_counter()

    def progress(done: int, total: int) -> None:
        elapsed = time.perf_counter() - started
        print(f"  chunk {done}/{total}  {elapsed:6.1f} s  peak RSS {peak_rss_mib():.0f} MiB", flush=True)

    audio = model.decode_chunked(latents, args.chunk, args.overlap, progress=progress)
    elapsed = time.perf_counter() - started
    peak = peak_rss_mib()
    output = audio.numel() * audio.element_size() / 2**20
    print(
        f"decoded {tuple(audio.shape)} ({output:.0f} MiB) in {elapsed:.1f} s ({args.seconds / elapsed:.2f}x real time)"
    )
    print(f"peak RSS {peak:.0f} MiB; decoding added {peak - baseline:.0f} MiB over the built model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
