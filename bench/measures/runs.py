"""What is asked of a model, through ``Pipeline`` exactly as ``sa3 generate | inpaint | extend`` call it:
each model's own default sampler, steps and guidance (``Pipeline.default_*``), splice on."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from sa3_engine.generation.geometry import regions_to_samples
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.training.synth.core import SAMPLE_RATE, Clip

from .data import Prompt

Log = Callable[[str], None]


def load(model: str, threads: int | None) -> Pipeline:
    if threads:
        torch.set_num_threads(threads)
    pipe = Pipeline.load(model)
    if pipe.sample_rate != SAMPLE_RATE:
        raise ValueError(f"{model}: runs at {pipe.sample_rate} Hz; the synthetic data is {SAMPLE_RATE} Hz")
    return pipe


def describe(pipe: Pipeline) -> dict:
    return {"model": pipe.model_id, "objective": pipe.model.diffusion_objective, "sampler": pipe.default_sampler,
            "steps": pipe.default_steps, "cfg_scale": pipe.default_cfg_scale, "precision": pipe.precision,
            "threads": torch.get_num_threads(), "parameters_m": round(sum(
                p.numel() for p in pipe.model.parameters()) / 1e6, 2)}


def generate(pipe: Pipeline, prompts: list[Prompt], batch: int, log: Log, label: str) -> list[np.ndarray]:
    """One generation per prompt (its seed, its exact length), ``batch`` prompts per pipeline call."""
    out: list[np.ndarray] = []
    for first in range(0, len(prompts), batch):
        group = prompts[first:first + batch]
        started = time.perf_counter()
        results = pipe.generate([p.text for p in group], duration=[p.seconds for p in group],
                                seed=[p.seed for p in group])
        out += [r.audio for r in results]
        log(f"{label}: {group[0].category} prompts {first + 1}-{first + len(group)} of {len(prompts)} "
            f"({sum(p.seconds for p in group):.1f} s of audio) in {time.perf_counter() - started:.1f} s")
    return out


def codec_round_trip(pipe: Pipeline, audio: np.ndarray) -> np.ndarray:
    """``audio`` through the model's own SAME autoencoder (encode, decode, clamp, cut to its length), as the
    pipeline does around the sampler: what the model could at best return for that clip."""
    from sa3_engine.generation.codec import codec_decode

    n = audio.shape[1]
    align = pipe.geometry.align
    padded = -(-n // align) * align
    with torch.no_grad():
        latents = pipe.encode_audio(audio, padded)
        out = codec_decode(pipe.model.autoencoder, latents, pipe.chunked)[0]
    return out.clamp(-1, 1)[:, :n].float().cpu().numpy()


def inpaint(pipe: Pipeline, source: Clip, seed: int) -> dict:
    """Regenerate the source's second bar (its own caption as the prompt); the boundaries are the sample
    indices the pipeline itself derives from the region's seconds."""
    bar = source.meta["bar_samples"]
    start, end = bar / SAMPLE_RATE, 2 * bar / SAMPLE_RATE
    (result,) = pipe.inpaint(source.audio, SAMPLE_RATE, [(start, end)], source.caption, seed=seed)
    (b0, b1), = regions_to_samples(start, end, SAMPLE_RATE)
    return {"audio": result.audio, "boundaries": [b0, b1], "kept": [(0, b0), (b1, source.audio.shape[1])],
            "expected_samples": int(source.audio.shape[1])}


def extend(pipe: Pipeline, source: Clip, seed: int, add_bars: int, min_add_seconds: float) -> dict:
    """Continue the source by whole bars (at least ``min_add_seconds``); the join is where the pipeline's
    region starts."""
    bar = source.meta["bar_samples"]
    bars = max(add_bars, int(np.ceil(min_add_seconds * SAMPLE_RATE / bar)))
    total_samples = source.audio.shape[1] + int(round(bars * bar))
    total = total_samples / SAMPLE_RATE
    (result,) = pipe.extend(source.audio, SAMPLE_RATE, total, source.caption, seed=seed)
    (join, _), = regions_to_samples(source.audio.shape[1] / SAMPLE_RATE, total, SAMPLE_RATE)
    return {"audio": result.audio, "boundaries": [join], "kept": [(0, join)], "expected_samples": total_samples,
            "added_bars": bars}


def speed(pipe: Pipeline, prompt: str, seconds: float = 10.0, repeats: int = 3) -> dict:
    """Wall time of one ``seconds`` generation with the model's defaults: median of ``repeats`` after one
    warm-up run (first-call allocations and kernel choices are not what a user waits for each time)."""
    pipe.generate(prompt, duration=seconds, seed=0)
    walls = []
    for i in range(repeats):
        started = time.perf_counter()
        (result,) = pipe.generate(prompt, duration=seconds, seed=1 + i)
        walls.append(time.perf_counter() - started)
        if result.audio.shape[1] != round(seconds * SAMPLE_RATE):
            raise AssertionError(f"speed run: {result.audio.shape[1]} samples for {seconds} s")
    median = statistics.median(walls)
    return {"seconds_of_audio": seconds, "repeats": repeats, "wall_seconds": [round(w, 3) for w in walls],
            "median_seconds": round(median, 3), "realtime_factor": round(seconds / median, 2),
            "sampler": pipe.default_sampler, "steps": pipe.default_steps, "cfg_scale": pipe.default_cfg_scale,
            "threads": torch.get_num_threads()}
