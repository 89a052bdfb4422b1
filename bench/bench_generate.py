"""Wall time of text-to-audio generation against the requested length, on the real small-music architecture.

    .venv/bin/python bench/bench_generate.py [--config small-music.json] [--seconds 5 30 120] [--steps 8]
        [--precision fp32|fast] [--compile]

The model is built from the released config with random weights (nothing is downloaded; the cost does
not depend on the values). T5Gemma is replaced by a stand-in returning random encodings of the
configured length: the real encoder runs once per prompt and is cached, so it is not what is measured.
Each run is a full ``Pipeline.generate`` (ping-pong, 8 steps, then decode). Because windows are sized
from the requested duration, the cost must follow it rather than the model's maximum; the ratio of
the shortest to the longest run shows that. The machine may be shared, so the process CPU time is
reported beside the wall time: it is much less sensitive to other processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.models.conditioners import TEXT_ENCODER_DIMS
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.runtime.device import DTYPES, FAST_DTYPES

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "shared" / "reference" / "configs" / "small-music.json"


class RandomTextEncoder:
    """Stands in for T5Gemma: fixed random encodings, every position a real token."""

    def __init__(self, dim: int):
        self.dim = dim

    def encode(self, prompts, max_length: int):
        generator = torch.Generator().manual_seed(0)
        hidden = torch.randn(len(prompts), max_length, self.dim, generator=generator)
        return hidden, torch.ones(len(prompts), max_length, dtype=torch.bool)


def random_pipeline(config: Path, *, precision: str = "fp32", compile: bool = False) -> Pipeline:
    """The architecture of a released ``model_config.json`` with random weights and the stand-in encoder,
    in ``precision`` (fp32, or fast: the CPU's bfloat16 weights), its DiT blocks and SAME decoder compiled if asked."""
    torch.manual_seed(0)
    model = SA3Model.from_config(json.loads(config.read_text())).eval().requires_grad_(False)
    if precision == "fast":
        model.cast(*(DTYPES[d] for d in FAST_DTYPES["cpu"]))
    if compile:
        model.compile_blocks()
    heads = model.conditioner.conditioners
    dim = next(TEXT_ENCODER_DIMS[h.model_name] for h in heads.values() if hasattr(h, "model_name"))
    return Pipeline(model, text_encoder=RandomTextEncoder(dim), model_id=config.stem)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a full SA3 model_config.json")
    parser.add_argument("--seconds", type=float, nargs="+", default=[5.0, 30.0, 120.0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--precision", choices=("fp32", "fast"), default="fp32",
                        help="fast: device.FAST_DTYPES['cpu']")
    parser.add_argument("--compile", action="store_true", help="torch.compile the DiT's blocks")
    args = parser.parse_args()

    started = time.perf_counter()
    pipe = random_pipeline(args.config, precision=args.precision, compile=args.compile)
    params = sum(p.numel() for p in pipe.model.parameters()) / 1e6
    print(f"{args.config.name}: {params:.0f} M parameters, built in {time.perf_counter() - started:.1f} s; "
          f"{torch.get_num_threads()} threads; {pipe.precision} precision; max window {pipe.max_seconds:.1f} s",
          flush=True)
    pipe.generate("warm-up", duration=1.0, steps=1, seed=0)  # one-time allocations and kernel choices

    walls, cpus = {}, {}
    for seconds in args.seconds:
        t0, c0 = time.perf_counter(), time.process_time()
        (gen,) = pipe.generate("bench", duration=seconds, steps=args.steps, seed=0)
        walls[seconds], cpus[seconds] = time.perf_counter() - t0, time.process_time() - c0
        frames = pipe.geometry.frames(pipe.geometry.window_samples([seconds]))
        timings = gen.timings
        print(f"{seconds:6.1f} s  ({frames:5d} frames, {gen.params['windows']} window(s)): "
              f"wall {walls[seconds]:7.1f} s = sample {timings['sample']:.1f} + decode {timings['decode']:.1f} "
              f"+ other {walls[seconds] - timings['sample'] - timings['decode']:.1f}; "
              f"cpu {cpus[seconds]:7.1f} s; {seconds / walls[seconds]:.2f}x real time", flush=True)
    shortest, longest = min(walls), max(walls)
    print(f"ratio {shortest:g} s / {longest:g} s: wall {walls[shortest] / walls[longest]:.3f}, "
          f"cpu {cpus[shortest] / cpus[longest]:.3f} (length ratio {shortest / longest:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
