"""What the engine costs on top of the pipeline, measured in one run.

1. Per-request overhead: a client round trip (``generate``) against the bare in-process pipeline call
   with the same arguments, and against the pipeline time the engine reports for that very request
   (``timings.total``); also a ``ping`` and a ``result`` refetch (no computation at all).
   Goal: under 5 ms plus the audio transfer.
2. Audio transfer rate: refetching a long finished clip over tcp and over ipc.
3. Throughput of 4 concurrent short requests: batched into one pipeline call vs one at a time.

    .venv/bin/python bench/bench_engine.py [--model tiny-random] [--steps 2] [--repeats 10]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bridge.client import EngineClient  # noqa: E402
from bridge.spawn import EngineProcess


def median_time(call, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def round_trips(client: EngineClient, args: dict, repeats: int) -> tuple[float, float]:
    """Median round trip, and median round trip minus the pipeline time the engine measured itself."""
    totals, overheads = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        (result,) = client.generate(**args)
        elapsed = time.perf_counter() - start
        totals.append(elapsed)
        overheads.append(elapsed - result.timings["total"])
    return statistics.median(totals), statistics.median(overheads)


def bare_pipeline(model: str, args: dict, repeats: int) -> float:
    import torch

    from sa3_engine.generation.pipeline import Pipeline

    torch.set_num_threads(1)  # as the engine process runs (OMP_NUM_THREADS=1 in EngineProcess)
    pipe = Pipeline.load(model)
    pipe.generate(**args)  # warm-up
    return median_time(lambda: pipe.generate(**args), repeats)


def concurrent(connection_file: Path, n: int, args: dict) -> float:
    """Wall time for ``n`` clients each sending one request at the same moment."""
    clients = [EngineClient(connection_file) for _ in range(n)]
    for c in clients:
        c.ping()  # connected before the clock starts
    barrier = threading.Barrier(n + 1)

    def one(i: int) -> None:
        barrier.wait()
        clients[i].generate(**{**args, "seed": i})

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    for c in clients:
        c.close()
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per short request")
    parser.add_argument("--long", type=float, default=30.0, help="seconds of the clip used for transfer rates")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    short = {"prompt": "bench", "duration": args.duration, "steps": args.steps, "seed": 1}
    print(f"model {args.model}, {args.steps} steps, short clips {args.duration:g} s, repeats {args.repeats}")

    bare = bare_pipeline(args.model, short, args.repeats)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in ("tcp", "ipc"):
            folder = Path(tmp, transport)
            folder.mkdir()
            with EngineProcess(folder, "--transport", transport, models=(args.model,)) as engine:
                with EngineClient(engine.connection_file) as client:
                    client.generate(**short, request_id="short")  # warm-up, kept for refetching
                    round_trip, inside = round_trips(client, short, args.repeats)
                    ping = median_time(client.ping, args.repeats * 10)
                    short_refetch = median_time(lambda: client.result("short"), args.repeats)
                    (clip,) = client.generate(**{**short, "duration": args.long, "steps": 1}, request_id="long")
                    refetch = median_time(lambda: client.result("long"), args.repeats)
                    mb = clip.audio.nbytes / 1e6
                    rows.append((transport, round_trip, inside, ping, short_refetch, refetch, mb))

        print(f"\nbare pipeline call                 {bare * 1e3:9.2f} ms")
        for transport, round_trip, inside, ping, short_refetch, refetch, mb in rows:
            print(f"[{transport}] generate round trip        {round_trip * 1e3:9.2f} ms   "
                  f"vs bare call {(round_trip - bare) * 1e3:+.2f} ms ({round_trip / bare:.3f}x)")
            print(f"[{transport}] round trip - engine's own pipeline time {inside * 1e3:9.2f} ms")
            print(f"[{transport}] ping                       {ping * 1e3:9.3f} ms")
            print(f"[{transport}] result refetch, {args.duration:g} s clip    {short_refetch * 1e3:9.3f} ms")
            print(f"[{transport}] result refetch, {args.long:g} s clip   {refetch * 1e3:9.2f} ms   "
                  f"{mb:.1f} MB -> {mb / refetch:.0f} MB/s")

        timings = {}
        for max_batch in (8, 1):
            folder = Path(tmp, f"batch{max_batch}")
            folder.mkdir()
            with EngineProcess(folder, "--max-batch", str(max_batch), models=(args.model,)) as engine:
                with EngineClient(engine.connection_file) as client:
                    client.generate(**short)
                runs = [concurrent(engine.connection_file, 4, short) for _ in range(3)]
                timings[max_batch] = statistics.median(runs)
        print(f"\n4 concurrent requests, batched      {timings[8] * 1e3:9.1f} ms")
        print(f"4 concurrent requests, one by one   {timings[1] * 1e3:9.1f} ms   "
              f"batching speed-up {timings[1] / timings[8]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
