"""Validation of generation arguments: every input checked before anything is allocated, errors naming the
argument, and the batch broadcast to one value per item."""

from __future__ import annotations

import itertools
import math
import secrets
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sa3_engine import audio as audio_io
from sa3_engine.generation.geometry import regions_to_samples
from sa3_engine.models.attention import PADDING_MODES
from sa3_engine.sampling import SAMPLERS

# The largest guidance scale accepted: the official Gradio slider's maximum. Far larger scales overflow
# the guided velocity to inf/NaN (cfg_scale 1e308 gave all-NaN audio).
MAX_CFG_SCALE = 25.0


@dataclass
class Request:
    """generate() arguments, validated and broadcast to the batch."""

    prompts: list[str]
    negatives: list[str] | None
    durations: list[float]
    seeds: list[int]
    steps: int
    cfg_scale: float
    apg_scale: float
    cfg_interval: tuple[float, float]
    cfg_norm_threshold: float
    sampler: str
    padding_mode: str
    source: np.ndarray | None
    regions: list[tuple[int, int]]
    region_seconds: list[tuple[float, float]]
    init: np.ndarray | None
    init_noise_level: float
    splice: bool
    loras: list[tuple[Path, float]]
    mode: str
    chained: bool = False

    @property
    def size(self) -> int:
        return len(self.prompts)


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def finite(value, name: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name}: must be finite, got {value!r}")
    return value


def _batch_size(batch_size, **lists) -> int:
    if not _is_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    given = {name: value for name, value in lists.items() if isinstance(value, (list, tuple))}
    # the first list given (prompt, negative_prompt, duration, seed) sets the size; the others must match it
    size = batch_size if batch_size > 1 or not given else len(next(iter(given.values())))
    for name, value in given.items():
        if len(value) != size:
            raise ValueError(f"{name}: {len(value)} values for a batch of {size} (one per item, or a single value)")
    return size


def _per_item(value, size: int) -> list:
    return list(value) if isinstance(value, (list, tuple)) else [value] * size


def _strings(value, size: int, name: str) -> list[str]:
    items = _per_item(value, size)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise ValueError(f"{name}: expected text, got {item!r}" + (f" at index {i}" if size > 1 else ""))
    return items


def _seeds(seed, size: int) -> list[int]:
    values = _per_item(seed, size)
    for value in values:
        if not _is_int(value) or not -1 <= value < 2**63 - size:
            raise ValueError(f"seed: expected -1 (random) or an integer in [0, 2**63), got {value!r}")
    if not isinstance(seed, (list, tuple)):  # one seed for a batch: consecutive seeds, each item reproducible alone
        base = secrets.randbelow(2**31) if seed == -1 else int(seed)
        return [base + i for i in range(size)]
    return [secrets.randbelow(2**31) if s == -1 else int(s) for s in values]


def guidance(apg_scale, cfg_interval, cfg_norm_threshold) -> tuple[float, tuple[float, float], float]:
    """Validated (apg_scale, cfg_interval, cfg_norm_threshold)."""
    apg = finite(apg_scale, "apg_scale")
    if not isinstance(cfg_interval, (list, tuple)) or len(cfg_interval) != 2:
        raise ValueError(f"cfg_interval: expected a (low, high) pair of times in [0, 1], got {cfg_interval!r}")
    low, high = (finite(v, "cfg_interval") for v in cfg_interval)
    if not 0 <= low <= high <= 1:
        raise ValueError(f"cfg_interval: expected 0 <= low <= high <= 1, got {cfg_interval!r}")
    threshold = finite(cfg_norm_threshold, "cfg_norm_threshold")
    if threshold < 0:
        raise ValueError(f"cfg_norm_threshold: must not be negative (0 = off), got {cfg_norm_threshold!r}")
    return apg, (low, high), threshold


def _audio_input(value, name: str, rate: int, channels: int, max_seconds: float) -> np.ndarray:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name}: expected a (sample_rate, audio) pair")
    sample_rate, audio = value
    return audio_io.prepare(audio, sample_rate, rate, channels, field=name, max_seconds=max_seconds)


def check_regions(starts, ends, source_samples: int, durations: list[float], rate: int) -> list[tuple[float, float]]:
    """Validated (start, end) pairs in seconds, sorted; errors name the offending argument."""
    if (starts is None) != (ends is None):
        missing = "mask_end" if ends is None else "mask_start"
        raise ValueError(f"{missing}: inpainting needs both the start and the end of each region")
    if isinstance(starts, (list, tuple)) != isinstance(ends, (list, tuple)):
        raise ValueError("mask_end: give both bounds as numbers or both as lists")
    starts, ends = _per_item(starts, 1), _per_item(ends, 1)
    if len(starts) != len(ends):
        raise ValueError(f"mask_end: {len(ends)} ends for {len(starts)} starts")
    if not starts:
        raise ValueError("mask_start: no region given")
    regions = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        tag = f"[{i}]" if len(starts) > 1 else ""
        s, e = finite(s, f"mask_start{tag}"), finite(e, f"mask_end{tag}")
        if s < 0:
            raise ValueError(f"mask_start{tag}: {s:g} s is before the start of the audio")
        if e <= s:
            raise ValueError(f"mask_end{tag}: the end ({e:g} s) must be after the start ({s:g} s)")
        if s * rate > source_samples + 1:
            raise ValueError(f"mask_start{tag}: {s:g} s is past the end of inpaint_audio "
                             f"({source_samples / rate:g} s)")
        if e * rate > round(min(durations) * rate) + 1:
            raise ValueError(f"mask_end{tag}: {e:g} s is past the requested duration "
                             f"({min(durations):g} s)")
        regions.append((s, e))
    regions.sort()
    for (s0, e0), (s1, _) in itertools.pairwise(regions):
        if s1 < e0:
            raise ValueError(f"mask_start: regions overlap ({s0:g}-{e0:g} s and a region "
                             f"starting at {s1:g} s)")
    return regions


def _covers(regions: list[tuple[float, float]], start: int, end: int, rate: int) -> bool:
    """Whether the sorted regions cover samples [start, end), up to one sample of rounding at each end."""
    reached = start
    for s, e in regions:
        if s * rate <= reached + 1 and e * rate > reached:
            reached = int(e * rate)
    return reached >= end - 1


def build(
    pipe, prompt, negative_prompt, duration, steps, cfg_scale, seed, batch_size, init_audio, init_noise_level,
    inpaint_audio, starts, ends, splice, loras, sampler, padding_mode, guidance_args,
) -> Request:
    """The arguments of ``Pipeline.generate`` validated against ``pipe`` (its rate, limits and defaults)."""
    size = _batch_size(batch_size, prompt=prompt, negative_prompt=negative_prompt, duration=duration, seed=seed)
    prompts = _strings(prompt, size, "prompt")
    negatives = None if negative_prompt is None else _strings(negative_prompt, size, "negative_prompt")
    durations = [finite(d, "duration") for d in _per_item(duration, size)]
    for d in durations:
        if d * pipe.sample_rate < 1:
            raise ValueError(f"duration: must be positive (at least one sample), got {d!r}")
        if d > pipe.max_duration_seconds:
            raise ValueError(f"duration: {d:g} s is longer than the limit of {pipe.max_duration_seconds:g} s")
    steps = pipe.default_steps if steps is None else steps
    if not _is_int(steps) or steps < 1:
        raise ValueError(f"steps: expected a positive integer, got {steps!r}")
    cfg_scale = pipe.default_cfg_scale if cfg_scale is None else finite(cfg_scale, "cfg_scale")
    if not 0 <= cfg_scale <= MAX_CFG_SCALE:
        raise ValueError(f"cfg_scale: must be at least 0 and at most {MAX_CFG_SCALE:g}, got {cfg_scale!r}")
    sampler = pipe.default_sampler if sampler is None else sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {sampler!r}")
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode: expected one of {PADDING_MODES}, got {padding_mode!r}")
    if not isinstance(splice, (bool, np.bool_)):
        raise ValueError(f"splice: expected True or False, got {splice!r}")
    chained = max(durations) > pipe.max_seconds
    init, level = _init_inputs(pipe, init_audio, init_noise_level, durations, chained)
    source, regions, mode = _inpaint_inputs(pipe, inpaint_audio, starts, ends, durations, chained)
    if init is not None and source is None:
        mode = "variation"
    return Request(
        prompts, negatives, durations, _seeds(seed, size), steps, cfg_scale, *guidance_args, sampler, padding_mode,
        source, regions_to_samples([s for s, _ in regions], [e for _, e in regions], pipe.sample_rate), regions,
        init, level, bool(splice), _lora_list(loras), mode, chained,
    )

def _init_inputs(pipe, init_audio, init_noise_level, durations: list[float], chained: bool):
    """(init audio at the model rate or None, noise level)."""
    if init_audio is None:
        return None, 1.0
    rate = pipe.sample_rate
    init = _audio_input(init_audio, "init_audio", rate, pipe.channels, pipe.max_input_seconds)
    level = finite(init_noise_level, "init_noise_level")
    if not 0 < level <= 1:
        raise ValueError(f"init_noise_level: must be in (0, 1], got {level!r}")
    if init.shape[1] > round(min(durations) * rate) + 1:
        raise ValueError(f"init_audio: {init.shape[1] / rate:g} s is longer than duration "
                         f"({min(durations):g} s); pass duration={init.shape[1] / rate:g}")
    if chained:
        raise ValueError(f"duration: audio-to-audio is limited to {pipe.max_seconds:g} s")
    return init, level

def _inpaint_inputs(pipe, inpaint_audio, starts, ends, durations: list[float], chained: bool):
    """(source at the model rate or None, regions in seconds, mode)."""
    if inpaint_audio is None:
        if starts is not None or ends is not None:
            raise ValueError("inpaint_audio: regions were given but no audio to inpaint")
        return None, [], "generate"
    rate = pipe.sample_rate
    source = _audio_input(inpaint_audio, "inpaint_audio", rate, pipe.channels, pipe.max_input_seconds)
    n = source.shape[1]
    regions = check_regions(starts, ends, n, durations, rate)
    if n > round(min(durations) * rate) + 1:
        raise ValueError(f"inpaint_audio: {n / rate:g} s is longer than duration ({min(durations):g} s); "
                         f"pass duration={n / rate:g}")
    longest = round(max(durations) * rate)
    if longest <= n + 1:
        mode = "inpaint"
    elif _covers(regions, n, longest, rate):
        mode = "extend"
    else:
        raise ValueError(
            f"duration: {max(durations):g} s is longer than inpaint_audio ({n / rate:g} s) but no region "
            "regenerates what follows the source; pass a region from the source's end to the duration to "
            "continue it, or a duration equal to the source to inpaint it")
    if chained and (mode != "extend" or len(regions) != 1 or abs(regions[0][0] * rate - n) > 1):
        raise ValueError(f"duration: beyond {pipe.max_seconds:g} s only text to audio and continuation "
                         "(one region from the end of the source) are supported")
    return source, regions, mode

def _lora_list(loras) -> list[tuple[Path, float]]:
    if loras is None:
        return []
    if not isinstance(loras, (list, tuple)):
        raise ValueError("loras: expected a list of (path, strength) pairs")
    out = []
    for i, entry in enumerate(loras):
        if not isinstance(entry, (list, tuple)) or len(entry) != 2:
            raise ValueError(f"loras[{i}]: expected a (path, strength) pair, got {entry!r}")
        path = Path(entry[0]).expanduser()
        if not path.is_file():
            raise ValueError(f"loras[{i}]: no adapter file at {path}")
        out.append((path.resolve(), finite(entry[1], f"loras[{i}] strength")))
    if len({p for p, _ in out}) != len(out):
        raise ValueError("loras: the same file is listed twice")
    return out
