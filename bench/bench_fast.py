"""fp32 against fast precision on the real small-music architecture: time, fidelity, DiT efficiency, one run.

    .venv/bin/python bench/bench_fast.py [--config small-music.json] [--seconds 5 30 120] [--repeats 3]
        [--fidelity-seconds 30] [--seeds 0 1 2] [--compile] [--device cpu] [--threads N]

One process builds the model once with random weights (as bench_generate.py; T5Gemma replaced by fixed random
encodings) and keeps two pipelines: ``fp32`` (the parity mode) and ``fast`` (``device.FAST_DTYPES``: bfloat16
DiT and SAME on CPU, float16 DiT on CUDA), each cast once. The modes are timed interleaved, the order
swapped every repeat, so a shared machine's drift hits both; each ratio is fp32 / fast of one pair, the
median quoted.

Fidelity, on fixed seeds and the same text encodings and noise: relative L2 error of the final latents,
SNR of the decoded audio (fast latents decoded by the fast SAME, against the fp32 path), and SNR of the fast
SAME alone on the fp32 latents. Random weights are not a trained model: see docs/performance.md.

Efficiency: one steady-state DiT forward (conditioning cached) at each ``--efficiency-seconds`` length,
its FLOPs (matrix products and attention) over its time, against the throughput of the same Linear
shapes run alone as matrix products in the same dtype, timed in the same run.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import torch.nn.functional as F
from bench_generate import DEFAULT_CONFIG, RandomTextEncoder
from torch import nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from sa3_engine.generation.noise import SeededNoise
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.generation.window import Window
from sa3_engine.models.conditioners import TEXT_ENCODER_DIMS
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.runtime.device import DTYPES, FAST_DTYPES, pick_device


def build(config_path, device: str, compile_dit: bool) -> tuple[dict[str, Pipeline], nn.Module | None]:
    """The fp32 and fast pipelines on one set of random weights, and (when compiling) an uncompiled copy
    of the fast DiT to count FLOPs on."""
    torch.manual_seed(0)
    model = SA3Model.from_config(json.loads(config_path.read_text())).eval().requires_grad_(False)
    heads = model.conditioner.conditioners
    dim = next(TEXT_ENCODER_DIMS[h.model_name] for h in heads.values() if hasattr(h, "model_name"))
    fast = copy.deepcopy(model).cast(*(DTYPES[d] for d in FAST_DTYPES[torch.device(device).type]))
    pipes = {}
    for name, m in (("fp32", model), ("fast", fast)):
        pipes[name] = Pipeline(m.to(device), text_encoder=RandomTextEncoder(dim), model_id=config_path.stem)
    twin = None
    if compile_dit:
        twin = copy.deepcopy(fast.dit)
        fast.compile_blocks()
    return pipes, twin


def snr_db(reference: torch.Tensor, other: torch.Tensor) -> float:
    noise = (reference.double() - other.double()).pow(2).sum()
    return float(10 * torch.log10(reference.double().pow(2).sum() / noise.clamp(min=1e-30)))


def timing(pipes: dict[str, Pipeline], seconds: float, repeats: int, steps: int) -> dict:
    runs: dict[str, list[dict]] = {name: [] for name in pipes}
    for r in range(repeats):
        for name in (list(pipes) if r % 2 == 0 else list(reversed(pipes))):
            t0 = time.perf_counter()
            (gen,) = pipes[name].generate("bench", duration=seconds, steps=steps, seed=r)
            runs[name].append(dict(gen.timings, wall=time.perf_counter() - t0))
    ratios = [a["wall"] / b["wall"] for a, b in zip(runs["fp32"], runs["fast"], strict=True)]
    return {"runs": runs, "ratio": statistics.median(ratios), "ratios": ratios}


def fidelity(pipes: dict[str, Pipeline], seconds: float, seeds: list[int], steps: int) -> list[dict]:
    out = []
    for seed in seeds:
        sampled = {}
        for name, pipe in pipes.items():
            window = Window(text=pipe.encode_text(["bench"]), seconds=[seconds], steps=steps)
            noise = SeededNoise.from_seeds([seed], pipe.geometry.own_frames([seconds]))
            with torch.no_grad():
                sampled[name] = pipe.sample_window(window, noise)
        ref, fast = sampled["fp32"], sampled["fast"]
        valid = pipes["fp32"].geometry.valid_frames([seconds], ref.latents.shape[-1])[0]
        a, b = ref.latents[..., :valid].double(), fast.latents[..., :valid].double()
        with torch.no_grad():
            audio_ref = pipes["fp32"].decode_items(ref, [seconds])[0]
            audio_fast = pipes["fast"].decode_items(fast, [seconds])[0]
            audio_decoder = pipes["fast"].decode_items(replace(fast, latents=ref.latents), [seconds])[0]
        audio_ref = torch.from_numpy(audio_ref)
        out.append({
            "seed": seed,
            "latent_rel_err": float((a - b).norm() / a.norm()),
            "audio_snr_db": snr_db(audio_ref, torch.from_numpy(audio_fast)),
            "decoder_only_snr_db": snr_db(audio_ref, torch.from_numpy(audio_decoder)),
        })
    return out


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query_shape, key_shape, value_shape)  # FlopCounterMode passes shapes


_SDPA_OPS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_flops}


def efficiency(pipe: Pipeline, seconds: float, repeats: int, twin: nn.Module | None = None) -> dict:
    """DiT forward FLOP/s against matrix-product FLOP/s on the forward's own Linear shapes.

    FLOPs and Linear shapes are counted on ``twin`` (an uncompiled DiT of the same architecture) when
    given: timed after counting under FlopCounterMode, compiled blocks ran at eager speed (measured).
    """
    dit, captured, shapes = pipe.model.dit, {}, []
    counted = twin if twin is not None else dit
    hook = dit.register_forward_pre_hook(lambda m, a, k: captured.update(args=a, kwargs=k), with_kwargs=True)
    pipe.generate("bench", duration=seconds, steps=2, seed=0)  # the inputs of a real step, cache filled
    hook.remove()

    def forward(module=dit):
        with torch.no_grad():
            module(*captured["args"], **captured["kwargs"])

    weights = {name: m.weight for name, m in dit.named_modules() if isinstance(m, nn.Linear)}

    def record(name):
        return lambda module, inputs, output: shapes.append((inputs[0].numel() // module.in_features, weights[name]))

    hooks = [m.register_forward_hook(record(n)) for n, m in counted.named_modules() if isinstance(m, nn.Linear)]
    with FlopCounterMode(display=False, custom_mapping=_SDPA_OPS) as counter:
        forward(counted)
    for h in hooks:
        h.remove()
    inputs = [(torch.randn(m, w.shape[1], dtype=w.dtype, device=w.device), w) for m, w in shapes]

    def matmuls():
        with torch.no_grad():
            for x, w in inputs:
                F.linear(x, w)

    matmul_flops = sum(2 * x.shape[0] * w.shape[0] * w.shape[1] for x, w in inputs)
    forward_s, matmul_s = [], []
    for _ in range(repeats):  # interleaved
        for fn, store in ((forward, forward_s), (matmuls, matmul_s)):
            t0 = time.perf_counter()
            fn()
            store.append(time.perf_counter() - t0)
    dit_rate = counter.get_total_flops() / statistics.median(forward_s)
    mm_rate = matmul_flops / statistics.median(matmul_s)
    return {"dtype": str(dit.dtype), "forward_s": statistics.median(forward_s),
            "gflop": counter.get_total_flops() / 1e9, "dit_gflops": dit_rate / 1e9,
            "matmul_gflops": mm_rate / 1e9, "fraction": dit_rate / mm_rate}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a full SA3 model_config.json")
    parser.add_argument("--seconds", type=float, nargs="*", default=[5.0, 30.0, 120.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--fidelity-seconds", type=float, nargs="*", default=[30.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--efficiency-seconds", type=float, nargs="*", default=[30.0])
    parser.add_argument("--compile", action="store_true", help="torch.compile the fast DiT's blocks and SAME decoder")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write every figure here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    started = time.perf_counter()
    pipes, twin = build(args.config, device, args.compile)
    print(f"{args.config.name} on {device}, {torch.get_num_threads()} threads, fast = "
          f"{pipes['fast'].dtype} DiT + {pipes['fast'].model.autoencoder.dtype} SAME"
          f"{' (compiled)' if args.compile else ''}; built in {time.perf_counter() - started:.0f} s",
          flush=True)
    for pipe in pipes.values():  # one-time allocations, kernel choices (and compilation)
        pipe.generate("warm-up", duration=1.0, steps=1, seed=0)
    report: dict = {"machine": {"device": device, "threads": torch.get_num_threads(), "compiled": args.compile},
                    "timing": {}, "fidelity": {}, "efficiency": {}}
    try:
        measure(args, pipes, twin, report)
    finally:  # what was measured, even if a later section fails
        if args.json:
            args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


def measure(args, pipes: dict[str, Pipeline], twin: nn.Module | None, report: dict) -> None:
    for seconds in args.seconds:
        result = report["timing"][seconds] = timing(pipes, seconds, args.repeats, args.steps)
        for name, runs in result["runs"].items():
            med = {k: statistics.median(r.get(k, 0.0) for r in runs) for k in ("wall", "sample", "decode")}
            print(f"{seconds:6.1f} s {name:>5}: wall {med['wall']:7.2f} s (sample {med['sample']:6.2f}, "
                  f"decode {med['decode']:5.2f}), median of {len(runs)}", flush=True)
        print(f"{seconds:6.1f} s ratio fp32/fast {result['ratio']:.2f}x "
              f"(pairs: {', '.join(f'{r:.2f}' for r in result['ratios'])})", flush=True)
    for seconds in args.fidelity_seconds:
        rows = report["fidelity"][seconds] = fidelity(pipes, seconds, args.seeds, args.steps)
        for row in rows:
            print(f"fidelity {seconds:g} s seed {row['seed']}: latents rel err {row['latent_rel_err']:.4f}, "
                  f"audio SNR {row['audio_snr_db']:.1f} dB, SAME alone {row['decoder_only_snr_db']:.1f} dB",
                  flush=True)
    for seconds in args.efficiency_seconds:
        for name, pipe in pipes.items():
            counted = twin if name == "fast" else None
            e = report["efficiency"][name] = efficiency(pipe, seconds, args.repeats, twin=counted)
            print(f"DiT {name} at {seconds:g} s: forward {e['forward_s']:.3f} s, {e['gflop']:.0f} GFLOP, "
                  f"{e['dit_gflops']:.0f} GFLOP/s = {e['fraction']:.0%} of {e['matmul_gflops']:.0f} GFLOP/s "
                  f"matrix products on its shapes ({e['dtype']})", flush=True)


if __name__ == "__main__":
    sys.exit(main())
