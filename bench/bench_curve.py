"""What CurveZMQ costs: the same engine over loopback tcp in clear and with ``--curve``, in one run.

1. Round trip: ``ping`` (no computation) and a short ``generate``.
2. Transfer of 30 s of stereo audio (44.1 kHz float32, 10.6 MB) each way:
   - down: refetching a finished clip with ``result`` (no computation);
   - up: an ``inpaint`` carrying the clip whose regions are invalid, so the engine receives, decrypts,
     checks the signature over every byte and refuses it (``bad_request``) without computing.
The CURVE client is paired like a remote machine (its own key folder); both engines run on this machine,
so the figures are CURVE's CPU cost, not a network's.

    .venv/bin/python bench/bench_curve.py [--repeats 10] [--seconds 30]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from bench_engine import median_time  # beside this script

from bridge import connection, curve
from bridge.client import EngineClient, EngineError
from bridge.spawn import EngineProcess
from sa3_engine.engine import security


def refused_upload(client: EngineClient, audio: np.ndarray) -> None:
    try:
        client.inpaint(audio, 0.5, 0.25, "bench", sample_rate=44100)  # ends before it starts: refused
    except EngineError as exc:
        assert exc.code == "bad_request", exc
    else:
        raise AssertionError("the upload was not refused")


def run(engine_args: list[str], folder: Path, connect, seconds: float, repeats: int) -> dict:
    with EngineProcess(folder, "--transport", "tcp", "--port", "0", *engine_args) as engine:
        with connect(engine) as client:
            short = {"prompt": "bench", "duration": 0.25, "steps": 1, "seed": 1}
            client.generate(**short)  # warm-up: the model is loaded, hello sent
            (clip,) = client.generate(**{**short, "duration": seconds}, request_id="long")
            mb = clip.audio.nbytes / 1e6
            refused_upload(client, clip.audio)  # warm-up of the upload path
            return {
                "ping": median_time(client.ping, repeats * 10),
                "generate": median_time(lambda: client.generate(**short), repeats),
                "down": mb / median_time(lambda: client.result("long"), repeats),
                "up": mb / median_time(lambda: refused_upload(client, clip.audio), repeats),
                "mb": mb,
            }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of the stereo clip transferred")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp, "plain")
        plain.mkdir()
        rows["tcp"] = run([], plain, lambda e: EngineClient(e.connection_file), args.seconds, args.repeats)

        engine_keys, laptop_keys = Path(tmp, "engine-keys"), Path(tmp, "laptop-keys")
        secure = Path(tmp, "curve")
        secure.mkdir()

        def paired(engine: EngineProcess) -> EngineClient:
            key = curve.client_keypair(laptop_keys).public
            info = security.pair("bench", key, engine.connection_file, keys_dir=engine_keys)
            return EngineClient(connection.write(info, secure / "laptop.json"), keys_dir=laptop_keys)

        rows["tcp+curve"] = run(["--curve", "--keys-dir", str(engine_keys)], secure, paired, args.seconds, args.repeats)

    mb = rows["tcp"]["mb"]
    print(f"loopback tcp, tiny-random, {args.seconds:g} s stereo = {mb:.1f} MB, medians of {args.repeats} "
          f"({args.repeats * 10} pings)\n")
    print(f"{'':12}{'ping ms':>10}{'generate ms':>13}{'down MB/s':>11}{'up MB/s':>9}")
    for name, row in rows.items():
        print(f"{name:12}{row['ping'] * 1e3:10.3f}{row['generate'] * 1e3:13.1f}{row['down']:11.0f}{row['up']:9.0f}")
    plain, secure = rows["tcp"], rows["tcp+curve"]
    print(f"\nCURVE: ping {(secure['ping'] - plain['ping']) * 1e3:+.3f} ms, "
          f"{args.seconds:g} s clip down {mb / secure['down'] * 1e3 - mb / plain['down'] * 1e3:+.1f} ms, "
          f"up {mb / secure['up'] * 1e3 - mb / plain['up'] * 1e3:+.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
