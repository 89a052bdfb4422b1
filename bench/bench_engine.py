"""What the engine costs on top of the pipeline, measured in one run.

1. Per-request overhead: a client round trip (``generate``) against the bare in-process pipeline call
   with the same arguments, and against the pipeline time the engine reports for that very request
   (``timings.total``); also a ``ping`` and a ``result`` refetch (no computation at all).
   Goal: under 5 ms plus the audio transfer.
2. Audio transfer rate: refetching a long finished clip over tcp and over ipc.
3. Batching, checked rather than assumed: 4 requests of 10 s sent at once while the worker is busy
   (so they queue and run as one pipeline call: every reply must say ``batched`` 4), against the same 4
   sent one after another. Reported as a throughput ratio, from wall time and from the pipeline time
   the engine measured itself (``timings.total``), and per stage (sampling, decoding) so that the stage
   that does not gain is named. ``--real-size CONFIG`` runs this part once more on a real-size
   architecture with random weights (as ``bench_generate.py``), in an engine in this process, and measures
   the most a batch can gain in its matrix products: the rate of the DiT's per-step Linear layers at one
   request's rows against ``n`` requests' rows, in the same run.

    .venv/bin/python bench/bench_engine.py [--model tiny-random] [--steps 2] [--repeats 10]
    .venv/bin/python bench/bench_engine.py --only-batching --real-size ../shared/reference/configs/small-music.json
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


LIVENESS_S = 300.0


def wait_for(predicate, what: str, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.01)


def batching(connection_file: Path, n: int, args: dict) -> dict:
    """``n`` requests one after another, then ``n`` sent at once while a blocker keeps the worker busy, so
    they queue and must run as one batch once it is cancelled. Wall and engine-measured pipeline times of
    both, and the ``batched`` field of every batched reply."""
    # an engine in this process shares the GIL with these clients: a long call may keep its pings unanswered
    with EngineClient(connection_file, liveness_s=LIVENESS_S) as client:
        client.generate(**args)  # warm-up at this length, one item and a batch of n (a compiled DiT
        client.generate(**{**args, "batch_size": n})  # compiles once more for batches: not timed below)
        start, stages = time.perf_counter(), dict.fromkeys(STAGES, 0.0)
        for i in range(n):
            (result,) = client.generate(**{**args, "seed": i})
            for stage in STAGES:
                stages[stage] += result.timings[stage]
        sequential = (time.perf_counter() - start, stages)
        blocker = client.submit("generate", {**args, "steps": 1000, "request_id": f"blocker-{time.time_ns()}"})
        wait_for(lambda: any(j["request_id"] == blocker and j.get("progress") for j in client.status()["running"]),
                 "the blocker never ran")
        clients = [EngineClient(connection_file, liveness_s=LIVENESS_S) for _ in range(n)]
        ids = [c.submit("generate", {**args, "seed": i}) for i, c in enumerate(clients)]
        wait_for(lambda: len(client.status()["queued"]) == n, "the requests never queued")
        start = time.perf_counter()
        client.cancel(blocker)  # it lets go at its next step; then the n queued requests start together
        results = [c.wait(rid)[0] for c, rid in zip(clients, ids, strict=True)]
        # one pipeline call: every reply carries that call's timings
        batched = (time.perf_counter() - start, {stage: results[0].timings[stage] for stage in STAGES})
        # the batched field is in the reply, not in a Generation: read the retained replies
        fields = [client._call("result", {"request_id": rid}).content["batched"] for rid in ids]
        for c in clients:
            c.close()
    return {"sequential": sequential, "batched": batched, "fields": fields}


def report_batching(name: str, n: int, args: dict, run: dict) -> None:
    (seq_wall, seq_stages), (bat_wall, bat_stages) = run["sequential"], run["batched"]
    seq_inside, bat_inside = seq_stages["total"], bat_stages["total"]
    print(f"\n[{name}] {n} requests of {args['duration']:g} s, {args['steps']} steps; batched fields {run['fields']}")
    if run["fields"] != [n] * n:
        print(f"[{name}] NOT BATCHED: every reply should say batched {n}")
    print(f"[{name}] one after another  wall {seq_wall:8.2f} s   pipeline {seq_inside:8.2f} s")
    print(f"[{name}] batched            wall {bat_wall:8.2f} s   pipeline {bat_inside:8.2f} s   (wall includes "
          "the blocker's last step)")
    print(f"[{name}] throughput ratio batched / one after another: wall {seq_wall / bat_wall:.2f}x, "
          f"pipeline {seq_inside / bat_inside:.2f}x")
    for stage in ("sample", "decode"):
        print(f"[{name}]   {stage:6s}  one after another {seq_stages[stage]:8.2f} s   batched {bat_stages[stage]:8.2f} s"
              f"   {seq_stages[stage] / bat_stages[stage]:.2f}x")


STAGES = ("sample", "decode", "total")
# Linear layers of a DiT block that run once per window (the step cache), not at every step
PER_WINDOW = ("cross_attn.to_kv", "to_local_embed")


def matmul_gain(pipe, seconds: float, n: int, repeats: int = 5) -> dict:
    """Rate of the DiT blocks' per-step Linear layers at one request's rows (memory tokens + frames)
    against ``n`` requests' rows, interleaved: the most batching can gain in the matrix products."""
    import torch
    import torch.nn.functional as F

    dit = pipe.model.dit
    g = pipe.geometry
    rows = dit.transformer.num_memory_tokens + g.frames(g.window_samples([seconds]))
    weights = [m.weight for name, m in dit.transformer.layers.named_modules()
               if isinstance(m, torch.nn.Linear) and not any(k in name for k in PER_WINDOW)]
    widths = {w.shape[1] for w in weights}
    inputs = {r: {k: torch.randn(r, k, dtype=weights[0].dtype) for k in widths} for r in (rows, n * rows)}
    spent = {r: [] for r in inputs}
    with torch.no_grad():
        for _ in range(repeats):
            for r, x in inputs.items():
                start = time.perf_counter()
                for w in weights:
                    F.linear(x[w.shape[1]], w)
                spent[r].append(time.perf_counter() - start)
    flops = {r: sum(2 * r * w.shape[0] * w.shape[1] for w in weights) for r in inputs}
    rate = {r: flops[r] / statistics.median(spent[r]) / 1e9 for r in inputs}
    return {"rows": rows, "n": n, "dtype": str(weights[0].dtype), "one": rate[rows], "batch": rate[n * rows]}


def real_size_engine(config: Path, folder: Path, precision: str = "fp32", compile: bool = False):
    """An engine in this process serving a real-size architecture with random weights as ``small-music``;
    returns it, its thread and its pipeline."""
    from bench_generate import random_pipeline

    from sa3_engine.engine.server import Engine, EngineConfig

    pipe = random_pipeline(config, precision=precision, compile=compile)
    engine = Engine(EngineConfig(models=["small-music"], connection_file=str(folder / "engine.json"), device="cpu"),
                    loader=lambda model_id: pipe)
    thread = threading.Thread(target=engine.serve, daemon=True)
    thread.start()
    wait_for(lambda: (folder / "engine.json").exists(), "the engine never started")
    return engine, thread, pipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-random")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--duration", type=float, default=1.0, help="seconds per short request")
    parser.add_argument("--long", type=float, default=30.0, help="seconds of the clip used for transfer rates")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-duration", type=float, default=10.0, help="seconds per batched request")
    parser.add_argument("--only-batching", action="store_true", help="skip parts 1 and 2")
    parser.add_argument("--real-size", type=Path, help="a model_config.json: batching on that architecture too")
    parser.add_argument("--precision", choices=("fp32", "fast"), default="fp32",
                        help="the real-size model's precision mode (default fp32)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the real-size model (--compile of sa3 serve)")
    args = parser.parse_args()
    short = {"prompt": "bench", "duration": args.duration, "steps": args.steps, "seed": 1}
    print(f"model {args.model}, {args.steps} steps, short clips {args.duration:g} s, repeats {args.repeats}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for transport in () if args.only_batching else ("tcp", "ipc"):
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

        bare = None if args.only_batching else bare_pipeline(args.model, short, args.repeats)
        if bare is not None:
            print(f"\nbare pipeline call                 {bare * 1e3:9.2f} ms")
        for transport, round_trip, inside, ping, short_refetch, refetch, mb in rows:
            print(f"[{transport}] generate round trip        {round_trip * 1e3:9.2f} ms   "
                  f"vs bare call {(round_trip - bare) * 1e3:+.2f} ms ({round_trip / bare:.3f}x)")
            print(f"[{transport}] round trip - engine's own pipeline time {inside * 1e3:9.2f} ms")
            print(f"[{transport}] ping                       {ping * 1e3:9.3f} ms")
            print(f"[{transport}] result refetch, {args.duration:g} s clip    {short_refetch * 1e3:9.3f} ms")
            print(f"[{transport}] result refetch, {args.long:g} s clip   {refetch * 1e3:9.2f} ms   "
                  f"{mb:.1f} MB -> {mb / refetch:.0f} MB/s")

        batch = {**short, "duration": args.batch_duration}
        folder = Path(tmp, "batch")
        folder.mkdir()
        with EngineProcess(folder, models=(args.model,)) as engine:
            report_batching(args.model, 4, batch, batching(engine.connection_file, 4, batch))
        if args.real_size:
            folder = Path(tmp, "real-size")
            folder.mkdir()
            engine, thread, pipe = real_size_engine(args.real_size, folder, args.precision, args.compile)
            name = f"{args.real_size.stem}, random weights, {args.precision}{', compiled' if args.compile else ''}"
            try:
                report_batching(name, 4, batch, batching(engine.connection_path, 4, batch))
            finally:
                engine.stop()
                thread.join(60)
            gain = matmul_gain(pipe, args.batch_duration, 4)
            print(f"[{name}] DiT per-step Linear layers ({gain['dtype']}): {gain['one']:.0f} GFLOP/s at one request's "
                  f"{gain['rows']} rows, {gain['batch']:.0f} GFLOP/s at {gain['n']}x: the products gain at most "
                  f"{gain['batch'] / gain['one']:.2f}x from batching")
    return 0


if __name__ == "__main__":
    sys.exit(main())
