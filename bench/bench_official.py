"""Our fp32 path against the official Stable Audio 3 code: same weights, same inputs, one process, interleaved.

    PYTHONPATH=. .venv/bin/python bench/bench_official.py --official-src /path/to/stable-audio-3
        [--config small-music.json] [--seconds 5 30 120] [--pairs 3 3 1] [--steps 8]
        [--dit-frames 120 388] [--dit-pairs 3] [--padding-mode vzero|mask] [--no-step-cache] [--threads 2]

The official code is not ours to ship, so it is not in this repo: clone it on a connected machine
(``git clone https://github.com/Stability-AI/stable-audio-3``, checkout 636f906, the commit measured) and give
the clone's folder. It is imported from there with our torch (its pin, 2.7.1, is not installed); it needs
``einops`` (``pip install einops``). torchaudio is imported by its modules but only used to resample, which
generation never does, so a stub stands in when it is missing.

Both models are built from the released config (nothing downloaded): ours with random weights, as
bench_generate.py does, the official one from the same config with those weights loaded strictly (the
checkpoint layouts are the same). T5Gemma is replaced on both sides by bench_generate's stand-in (fixed random
encodings; the real encoder runs once per prompt and is cached by our engine): on the official side a
conditioner class with the official head (``proj_out``, learned padding) takes the place of
``T5GemmaConditioner``, which would load the real model.

Full generation: the official ``StableAudioModel.generate(prompt, duration, steps, seed)`` (ping-pong, then
SAME-S decode, chunked as the config says) against our ``Pipeline.generate`` with the same arguments and
``padding_mode="vzero"``, the official CPU attention (no flash-attn; ``--padding-mode mask`` times our default,
true masking, whose outputs differ by design); the same seed gives the same noise on both sides, so the
latents the decoder receives and the audio must agree (the largest absolute differences are printed). Each
side gets one warm-up generation at each length (one sampler step: every allocation at that size, a
fraction of the cost), then ``pairs`` timed pairs, the order swapped every pair; the ratio quoted is the
median over pairs of ours / official, of wall time and of process CPU time. Splits: sample (the ping-pong
loop), of which the DiT forwards; decode; the rest of the wall time is text and conditioning, noise, cut and
clamp. The machine may be shared: a run beside another benchmark is not a measure (see docs/performance.md).

DiT alone: one forward of each DiT on the same inputs (conditioning of a generation of that window, t = 0.7,
no step cache on our side) at each ``--dit-frames`` length, interleaved the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import types
from functools import partial
from pathlib import Path

import numpy as np
import torch
from bench_generate import DEFAULT_CONFIG, random_pipeline

import sa3_engine.generation.pipeline as pipeline_module
from sa3_engine.models.dit import DiffusionTransformer, StepCache

SPENT: dict[str, float] = {}  # seconds per stage of the current run, filled by the wrappers below
LATENTS: list[torch.Tensor] = []  # what the current run decoded


def add_time(key: str, start: float) -> None:
    SPENT[key] = SPENT.get(key, 0.0) + time.perf_counter() - start


def timed_call(fn, key: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            add_time(key, start)

    return wrapper


def keep_latents(fn, of=lambda latents: latents):
    """``fn`` that also keeps ``of(first argument)``: the latents it is given."""

    def wrapper(first, *args, **kwargs):
        LATENTS.append(of(first).clone())
        return fn(first, *args, **kwargs)

    return wrapper


def time_forwards(module: torch.nn.Module, key: str) -> None:
    """Accumulate ``module``'s forward time under ``key``."""
    started: list[float] = []
    module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
    module.register_forward_hook(lambda *_: add_time(key, started.pop()))


def import_official(src: Path, text_encoder):
    """The official package from its source folder, T5Gemma replaced by ``text_encoder``."""
    if not (src / "stable_audio_3" / "model.py").is_file():
        sys.exit(f"--official-src {src}: no stable_audio_3/model.py there (give the clone's root folder)")
    try:
        import torchaudio  # noqa: F401
    except ImportError:  # only Resample is used, and generation never resamples
        stub, transforms = types.ModuleType("torchaudio"), types.ModuleType("torchaudio.transforms")

        class Resample:
            def __init__(self, *args, **kwargs):
                raise RuntimeError("torchaudio is not installed (bench_official.py stub)")

        transforms.Resample, stub.transforms = Resample, transforms
        sys.modules.update({"torchaudio": stub, "torchaudio.transforms": transforms})
    sys.path.insert(0, str(src))
    import stable_audio_3.factory as factory
    import stable_audio_3.inference.sampling as sampling
    from stable_audio_3.model import StableAudioModel
    from stable_audio_3.models.conditioners import Conditioner

    class StandInT5(Conditioner):
        """The official T5Gemma head (projection, padding) on the stand-in encoder's output."""

        def __init__(self, output_dim, model_name="google/t5gemma-b-b-ul2", max_length=128, project_out=False,
                     padding_mode="zero", **_):
            super().__init__(768, output_dim, project_out=project_out, padding_mode=padding_mode)
            self.max_length = max_length

        def forward(self, prompts, device):
            hidden, mask = text_encoder.encode(list(prompts), self.max_length)
            embeddings = self.apply_padding(self.proj_out(hidden.to(device)), mask.to(device))
            return embeddings, mask.to(device)

    factory.T5GemmaConditioner = StandInT5
    sampling.sample_flow_pingpong = timed_call(sampling.sample_flow_pingpong, "sample")
    return factory, StableAudioModel


def build(config_path: Path, src: Path):
    """Our pipeline (fp32, random weights) and the official model with the same weights."""
    pipe = random_pipeline(config_path, precision="fp32")
    factory, StableAudioModel = import_official(src, pipe.text_encoder)
    config = json.loads(config_path.read_text())
    official = factory.create_diffusion_cond_from_config(config)
    official.load_state_dict(pipe.model.state_dict(), strict=True)
    official.eval().requires_grad_(False)
    official.pretransform.decode = timed_call(keep_latents(official.pretransform.decode), "decode")
    pipe.decode_items = keep_latents(pipe.decode_items, lambda sampled: sampled.latents)
    time_forwards(official.model, "dit")
    time_forwards(pipe.model.dit, "dit")
    return pipe, StableAudioModel(official, config, "cpu", model_half=False)


def measured(fn) -> tuple[dict, object]:
    """fn() with its wall and process CPU time (both threads; less sensitive to other processes) and the
    stages the wrappers timed."""
    SPENT.clear()
    LATENTS.clear()
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    split = {"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}
    return {**split, **{k: SPENT.get(k, 0.0) for k in ("sample", "dit", "decode")}}, out


def run_ours(pipe, seconds: float, steps: int, seed: int, padding_mode: str) -> tuple[dict, tuple]:
    split, (gen,) = measured(lambda: pipe.generate("bench", duration=seconds, steps=steps, seed=seed,
                                                   padding_mode=padding_mode))
    split.update(sample=gen.timings["sample"], decode=gen.timings["decode"])
    return split, (gen.audio, LATENTS[0].numpy())


def run_official(model, seconds: float, steps: int, seed: int) -> tuple[dict, tuple]:
    split, audio = measured(lambda: model.generate(prompt="bench", duration=seconds, steps=steps, seed=seed,
                                                   disable_tqdm=True))
    return split, (audio[0].numpy(), LATENTS[0].numpy())


def interleaved(runs: dict, pairs: int, label: str) -> dict[str, list]:
    """``runs``: name -> callable(repeat) returning (split, output). Pairs alternate which side goes first."""
    results: dict[str, list] = {name: [] for name in runs}
    for r in range(pairs):
        for name in list(runs) if r % 2 == 0 else list(reversed(runs)):
            split, out = runs[name](r)
            results[name].append((split, out))
            print(f"  {label} pair {r + 1}/{pairs} {name:8s} " + " ".join(f"{k} {v:.2f}" for k, v in split.items()),
                  flush=True)
    return results


def max_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        raise RuntimeError(f"outputs differ in shape: {a.shape} vs {b.shape}")
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def generation(pipe, official, seconds: float, pairs: int, steps: int, padding_mode: str) -> dict:
    frames = pipe.geometry.frames(pipe.geometry.window_samples([seconds]))
    print(f"{seconds:g} s ({frames} frames): warm-up (1 step each)", flush=True)
    run_ours(pipe, seconds, 1, 0, padding_mode)
    run_official(official, seconds, 1, 0)
    runs = {
        "official": lambda r: run_official(official, seconds, steps, r),
        "ours": lambda r: run_ours(pipe, seconds, steps, r, padding_mode),
    }
    results = interleaved(runs, pairs, f"{seconds:g} s")
    pairs_out = [(o, p) for (_, o), (_, p) in zip(results["ours"], results["official"], strict=True)]
    diffs = {k: max(max_diff(o[i], p[i]) for o, p in pairs_out) for i, k in enumerate(("audio", "latents"))}
    med = {name: {k: statistics.median(s[k] for s, _ in res) for k in res[0][0]} for name, res in results.items()}
    return {"seconds": seconds, "frames": frames, "median": med, **pair_ratios(results), "diff": diffs,
            "pairs": pairs}


def pair_ratios(results: dict) -> dict:
    """Per pair, ours / official of wall and CPU time; their medians."""
    pairs = list(zip(results["ours"], results["official"], strict=True))
    ratios = {k: [o[k] / p[k] for (o, _), (p, _) in pairs] for k in ("wall", "cpu")}
    return {"ratios": ratios["wall"], "ratio": statistics.median(ratios["wall"]),
            "cpu_ratio": statistics.median(ratios["cpu"])}


def dit_inputs(pipe, frames: int) -> dict:
    """Conditioning of a generation whose window has ``frames`` frames (t = 0.7), as both sides receive it."""
    g = pipe.geometry
    seconds = float(int(frames * g.ratio / g.sample_rate - g.padding_seconds))  # 120 -> 5 s, 388 -> 30 s
    generator = torch.Generator().manual_seed(frames)
    channels = pipe.model.io_channels
    local = torch.zeros(1, 1 + channels, frames)  # no inpainting: mask 0, masked input 0
    cond = pipe.condition(pipe.encode_text(["bench"]), [seconds], local[:, :1], local[:, 1:])
    return {"x": torch.randn(1, channels, frames, generator=generator), "t": torch.tensor([0.7]),
            "cross": cond.cross_attn_cond, "global": cond.global_cond, "local": cond.local_add_cond,
            "padding_mask": g.padding_mask([seconds], frames)}


def dit_forward(pipe, official, frames: int, pairs: int, padding_mode: str) -> dict:
    inputs = dit_inputs(pipe, frames)
    ours: DiffusionTransformer = pipe.model.dit

    def run(fn):
        def timed_run(_r):
            with torch.no_grad():
                split, out = measured(fn)
            return {k: split[k] for k in ("wall", "cpu")}, out.numpy()

        return timed_run

    runs = {
        "official": run(lambda: official.model.model(
            inputs["x"], inputs["t"], cross_attn_cond=inputs["cross"], global_cond=inputs["global"],
            local_add_cond=inputs["local"], padding_mask=inputs["padding_mask"])),
        "ours": run(lambda: ours(inputs["x"], inputs["t"], inputs["cross"], inputs["global"], inputs["local"],
                                 inputs["padding_mask"], padding_mode=padding_mode)),
    }
    print(f"DiT forward at {frames} frames: warm-up", flush=True)
    for fn in runs.values():
        fn(0)
    results = interleaved(runs, pairs, f"DiT {frames}")
    walls = {name: statistics.median(s["wall"] for s, _ in res) for name, res in results.items()}
    diff = max(max_diff(o, p) for (_, o), (_, p) in zip(results["ours"], results["official"], strict=True))
    return {"frames": frames, "walls": walls, **pair_ratios(results), "diff": diff}


def report(gens: list[dict], dits: list[dict], padding_mode: str, note: str) -> None:
    print(f"\nFull generation (median of pairs; ours with padding_mode={padding_mode!r}{note}); seconds of wall time")
    print("| length | official wall (sample / DiT / decode) | ours wall (sample / DiT / decode) "
          "| ours / official, wall (per pair) | cpu | max abs diff: audio, latents |")
    print("|---|---|---|---|---|---|")
    for g in gens:
        o, p = g["median"]["official"], g["median"]["ours"]
        ratios = ", ".join(f"{r:.3f}" for r in g["ratios"])
        print(f"| {g['seconds']:g} s ({g['frames']} frames, {g['pairs']} pairs) "
              f"| {o['wall']:.2f} ({o['sample']:.2f} / {o['dit']:.2f} / {o['decode']:.2f}) "
              f"| {p['wall']:.2f} ({p['sample']:.2f} / {p['dit']:.2f} / {p['decode']:.2f}) "
              f"| **{g['ratio']:.3f}** ({ratios}) | {g['cpu_ratio']:.3f} | {g['diff']['audio']:.3g}, {g['diff']['latents']:.3g} |")
    if dits:
        print("\nDiT forward alone (median of pairs), seconds")
        print("| frames | official | ours | ours / official, wall (per pair) | cpu | max abs diff (velocity) |")
        print("|---|---|---|---|---|---|")
        for d in dits:
            ratios = ", ".join(f"{r:.3f}" for r in d["ratios"])
            print(f"| {d['frames']} | {d['walls']['official']:.3f} | {d['walls']['ours']:.3f} "
                  f"| **{d['ratio']:.3f}** ({ratios}) | {d['cpu_ratio']:.3f} | {d['diff']:.3g} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-src", type=Path, required=True,
                        help="root of a stable-audio-3 clone (github.com/Stability-AI/stable-audio-3, 636f906)")
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="a full SA3 model_config.json")
    parser.add_argument("--seconds", type=float, nargs="*", default=[5.0, 30.0, 120.0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[3, 3, 1],
                        help="timed pairs per length (the last value repeats)")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--dit-frames", type=int, nargs="*", default=[120, 388])
    parser.add_argument("--dit-pairs", type=int, default=3)
    parser.add_argument("--padding-mode", choices=("vzero", "mask"), default="vzero",
                        help="ours: vzero = the official CPU attention (equal outputs); mask = our default")
    parser.add_argument("--no-step-cache", action="store_true",
                        help="ours recomputes the conditioning-only work (cross-attention K/V, local-add) every step")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.no_step_cache:
        pipeline_module.StepCache = partial(StepCache, size=0)

    started = time.perf_counter()
    pipe, official = build(args.config, args.official_src.resolve())
    print(f"{args.config.name}: both models built in {time.perf_counter() - started:.1f} s; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads", flush=True)
    pairs = args.pairs + [args.pairs[-1]] * max(0, len(args.seconds) - len(args.pairs))
    gens = [generation(pipe, official, s, n, args.steps, args.padding_mode)
            for s, n in zip(args.seconds, pairs, strict=False)]
    dits = [dit_forward(pipe, official, f, args.dit_pairs, args.padding_mode) for f in args.dit_frames]
    report(gens, dits, args.padding_mode, ", no step cache" if args.no_step_cache else "")
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
