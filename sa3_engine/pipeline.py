"""Generation on one SA3 model: text to audio, audio to audio, inpainting, continuation and chained long audio.

One sampler run is a *window*, computed as the official ``StableAudioModel.generate`` does:

1. sizes: (longest duration + 6 s) rounded up to whole latent chunks, capped (:class:`Geometry`);
2. the padding mask (frames past each item's duration + 6 s) and, for inpainting, the frame mask;
3. noise (drawn first), source latents (SAME), conditioning (text head, duration head, local-add inputs);
4. the schedule from each item's effective length, the sampler (ping-pong / Euler / DPM++) with CFG + APG;
5. per item: decode, zero beyond the valid frames, clamp to [-1, 1], cut to round(duration * rate) samples.

:class:`Pipeline` adds what a producer needs around that: validation of every input (errors name the
field), the kept audio spliced back bit-identically, windows chained past the model's maximum length,
LoRAs kept loaded between calls, progress and cancellation through one callback. The parity cases
call :meth:`Pipeline.sample_window` directly with the official recorded noise.
"""

from __future__ import annotations

import itertools
import math
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from . import audio as audio_io
from .attention import PADDING_MODES
from .conditioners import DiTConditioning, NumberConditioner, TextConditioner
from .config import ConfigError, autoencoder_config
from .config import field as config_field
from .device import DTYPES, pick_autoencoder_dtype, pick_device, pick_dtype
from .dpmpp import sample_dpmpp
from .euler import sample_euler
from .guidance import guided_model, uncond_context
from .lora import Lora, load_lora, set_lora_strength, unload_lora
from .model import SA3Model
from .pingpong import sample_pingpong
from .same import chunk_starts
from .schedules import Callback, build_schedule, sampling_shift

DURATION_PADDING_SECONDS = 6.0  # official duration_padding_sec: generated past the duration, then cut
OFFICIAL_SAMPLE_SIZE = 5292032  # official generate()'s default length cap (120 s), whatever the model
DEFAULT_ENCODER_CHUNK = 32  # official fallback when the encoder config has no chunk_size (SAME-L)
CODEC_CHUNK, CODEC_OVERLAP = 128, 32  # official chunked encode/decode sizes, in latent frames
SPLICE_FADE_SECONDS = 0.02  # equal-power crossfade into and out of each regenerated region
CHAIN_CONTEXT_SECONDS = 10.0  # audio a chained window is given from the one before (at most a third of it)
CHAIN_CROSSFADE_SECONDS = 0.25  # crossfade at each join between chained windows
# Defaults of the limits a Pipeline enforces before allocating anything: the longest result (a chained
# result is held whole in memory) and the longest source audio.
MAX_DURATION_SECONDS = 1800.0
MAX_INPUT_SECONDS = 1800.0

SAMPLERS = {"pingpong": sample_pingpong, "euler": sample_euler, "dpmpp": sample_dpmpp}
# diffusion objective -> (sampler, steps, cfg_scale): post-trained models are distilled for 8 ping-pong
# steps without guidance; base models use 50 Euler steps with CFG 7 (official docs, Gradio).
OBJECTIVE_DEFAULTS = {"rf_denoiser": ("pingpong", 8, 1.0), "rectified_flow": ("euler", 50, 7.0)}
LOCAL_ADD_IDS = ("inpaint_mask", "inpaint_masked_input")
DURATION_ID = "seconds_total"

Text = tuple[torch.Tensor, torch.Tensor]  # (B, S, D) text-encoder output, (B, S) attention mask (1 = token)


@contextmanager
def _timed(timings: dict | None, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


# --------------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class Geometry:
    """Window sizes from a model: samples per latent frame, length alignment, maximum, duration padding."""

    sample_rate: int
    ratio: int  # audio samples per latent frame
    align: int  # window lengths are multiples of this many samples (whole encoder chunks)
    max_samples: int  # the longest window
    padding_seconds: float = DURATION_PADDING_SECONDS

    @classmethod
    def of(cls, model: SA3Model) -> Geometry:
        """From the config, as the official ``_adapt_sample_size`` reads it.

        The cap is the config's ``sample_size``, floored to whole chunks. The official ``generate()``
        caps at its own ``sample_size`` argument instead, ``OFFICIAL_SAMPLE_SIZE`` (120 s) for every model
        unless the caller passes one, so long requests on a model with a larger config stop at 120 s.
        """
        ratio = int(model.autoencoder.downsampling_ratio)
        encoder = config_field(
            config_field(autoencoder_config(model.config), "encoder", "model.pretransform.config"),
            "config", "model.pretransform.config.encoder",
        )
        chunk = encoder.get("chunk_size") or DEFAULT_ENCODER_CHUNK
        stride = config_field(encoder, "strides", "model.pretransform.config.encoder.config")[0]
        align = ratio * max(1, chunk // stride)
        max_samples = int(config_field(model.config, "sample_size", "config")) // align * align
        if max_samples <= 0:
            raise ConfigError(f"config field sample_size is shorter than one chunk ({align} samples)")
        return cls(model.sample_rate, ratio, align, max_samples)

    @property
    def max_seconds(self) -> float:
        return self.max_samples / self.sample_rate

    def to_samples(self, seconds: float) -> int:
        """The official seconds -> sample index conversion (truncation)."""
        return int(seconds * self.sample_rate)

    def window_samples(self, seconds: Sequence[float]) -> int:
        """Audio samples of the window for items of these durations: (longest + padding) rounded up to whole
        chunks, capped."""
        n = int((max(seconds) + self.padding_seconds) * self.sample_rate)
        return min(-(-n // self.align) * self.align, self.max_samples)

    def frames(self, samples: int) -> int:
        return samples // self.ratio

    def own_frames(self, seconds: Sequence[float]) -> list[int]:
        """Each item's window length in frames, as if it were generated alone."""
        return [self.frames(self.window_samples([s])) for s in seconds]

    def effective_frames(self, seconds: Sequence[float]) -> list[int]:
        """Frames holding each item's duration: the length the schedule is built for."""
        return [math.ceil(self.to_samples(s) / self.ratio) for s in seconds]

    def valid_frames(self, seconds: Sequence[float], frames: int) -> list[int]:
        """Frames attended to per item: the duration plus the padding's whole frames, at most ``frames``."""
        headroom = int(self.padding_seconds * self.sample_rate / self.ratio)
        return [min(frames, n + headroom) for n in self.effective_frames(seconds)]

    def padding_mask(self, seconds: Sequence[float], frames: int) -> torch.Tensor:
        """(B, T) bool, True = a valid frame."""
        valid = torch.tensor(self.valid_frames(seconds, frames))
        return torch.arange(frames)[None, :] < valid[:, None]

    def inpaint_mask(
        self, regions: Sequence[tuple[int, int]], seconds: Sequence[float], samples: int, frames: int
    ) -> torch.Tensor:
        """(B, 1, T) float mask, 1 = keep the source, 0 = regenerate.

        The official code builds the mask at the sample rate and downsamples it by nearest neighbour, so
        frame j takes the value at sample :func:`nearest_indices` [j]; this reads those samples directly
        (the same result without a sample-rate mask, ~67 MB per item at 380 s). A frame is regenerated iff
        its sample lies in a region or after the item's duration (per item; the official code uses the
        longest duration for the whole batch, which only differs for batches of mixed durations).
        """
        at = nearest_indices(samples, frames)
        mask = torch.ones(len(seconds), frames)
        for start, end in regions:
            mask[:, (at >= start) & (at < end)] = 0
        for i, s in enumerate(seconds):
            mask[i, at >= self.to_samples(s)] = 0
        return mask[:, None, :]


def nearest_indices(size: int, frames: int) -> torch.Tensor:
    """(frames,) int64: the input index each output takes when ``F.interpolate(mode="nearest")`` resizes
    ``size`` values to ``frames``: min(floor(j * scale), size - 1), scale = size / frames, both in float32
    as in torch's kernel (so j * ratio exactly when size = frames * ratio)."""
    scale = float(np.float32(size) / np.float32(frames))
    at = torch.floor(torch.arange(frames, dtype=torch.float32) * scale).long()
    return at.clamp(max=size - 1)


def regions_to_samples(starts, ends, sample_rate: int) -> list[tuple[int, int]]:
    """Regions given as seconds (two scalars or two equal-length lists) -> official sample ranges."""
    starts = list(starts) if isinstance(starts, (list, tuple)) else [starts]
    ends = list(ends) if isinstance(ends, (list, tuple)) else [ends]
    return [(int(float(s) * sample_rate), int(float(e) * sample_rate)) for s, e in zip(starts, ends, strict=True)]


def decode_chunks(frames: int, chunked: bool) -> int:
    """How many decoder calls (progress steps) decoding ``frames`` takes."""
    if not chunked or frames < CODEC_CHUNK:
        return 1
    return len(chunk_starts(frames, CODEC_CHUNK, CODEC_CHUNK - CODEC_OVERLAP))


def codec_encode(autoencoder, audio: torch.Tensor, chunked: bool) -> torch.Tensor:
    """(B, channels, N) audio -> (B, C, T) latents, chunked as the official pretransform does when asked."""
    if chunked:
        return autoencoder.encode_chunked(audio, CODEC_CHUNK, CODEC_OVERLAP)
    return autoencoder.encode(audio)


def codec_decode(
    autoencoder, latents: torch.Tensor, chunked: bool, progress: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """(B, C, T) latents -> (B, channels, T * ratio) audio; chunked decoding holds one chunk at a time."""
    if chunked and latents.shape[-1] >= CODEC_CHUNK:
        return autoencoder.decode_chunked(latents, CODEC_CHUNK, CODEC_OVERLAP, progress=progress)
    audio = autoencoder.decode(latents)
    if progress is not None:
        progress(1, 1)
    return audio


# --------------------------------------------------------------------------------------------- noise


@dataclass
class SeededNoise:
    """Random draws for one window, each item from its own generator.

    An item's draws (the initial noise, then one per sampler step) have the shape of the item's own
    window, (1, C, own frames), whatever the batch: a batched item therefore gets the same numbers as
    when it runs alone, and the frames the batch adds past its own window are zeros. Those frames are
    padding, so under true masking ("mask") batching does not change an item's result beyond floating-point
    rounding (batched kernels may sum in another order). A CPU generator seeded with s reproduces the
    official ``torch.manual_seed(s); torch.randn(...)`` stream, so a single item matches the official code
    draw for draw.
    """

    generators: list[torch.Generator]
    frames: list[int]

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], frames: Sequence[int]) -> SeededNoise:
        return cls([torch.Generator().manual_seed(int(s)) for s in seeds], list(frames))

    def _draw(self, channels: int, total: int) -> torch.Tensor:
        parts = []
        for generator, own in zip(self.generators, self.frames, strict=True):
            own = min(own, total)
            parts.append(F.pad(torch.randn((1, channels, own), generator=generator), (0, total - own)))
        return torch.cat(parts)

    def initial(self, shape: tuple[int, int, int]) -> torch.Tensor:
        return self._draw(shape[1], shape[2])

    def __call__(self, step: int, like: torch.Tensor) -> torch.Tensor:
        return self._draw(like.shape[1], like.shape[2]).to(device=like.device, dtype=like.dtype)


# --------------------------------------------------------------------------------------------- one window


@dataclass
class Window:
    """The inputs of one sampler run (one official generate() call), text already encoded."""

    text: Text
    seconds: list[float]  # per item: conditioning, lengths, masks
    steps: int
    sampler: str = "pingpong"
    cfg_scale: float = 1.0
    apg_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # guidance only while low <= t <= high
    cfg_norm_threshold: float = 0.0  # > 0: limit the guidance difference's norm to this
    negative_text: Text | None = None
    source: np.ndarray | None = None  # (channels, n) float32 at the model rate: what inpainting keeps
    regions: Sequence[tuple[int, int]] = ()  # sample ranges of ``source`` to regenerate
    init: np.ndarray | None = None  # (channels, n) float32 at the model rate: audio-to-audio start
    init_noise_level: float = 1.0
    padding_mode: str = "mask"


@dataclass
class Sampled:
    """A window's result and the tensors it was made from."""

    latents: torch.Tensor  # (B, C, T)
    sigmas: torch.Tensor  # (B, steps + 1)
    padding_mask: torch.Tensor  # (B, T) bool
    cond: DiTConditioning
    negative: DiTConditioning | None
    inpaint_mask: torch.Tensor  # (B, 1, T)
    source_latents: torch.Tensor | None  # (1, C, T)
    masked_input: torch.Tensor  # (B, C, T)
    samples: int


@dataclass
class Generation:
    audio: np.ndarray  # float32 (channels, round(duration * sample_rate)), in [-1, 1]
    sample_rate: int
    seed: int
    params: dict
    timings: dict


# --------------------------------------------------------------------------------------------- requests


@dataclass
class _Request:
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


def _finite(value, name: str) -> float:
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


def _guidance(apg_scale, cfg_interval, cfg_norm_threshold) -> tuple[float, tuple[float, float], float]:
    """Validated (apg_scale, cfg_interval, cfg_norm_threshold)."""
    apg = _finite(apg_scale, "apg_scale")
    if not isinstance(cfg_interval, (list, tuple)) or len(cfg_interval) != 2:
        raise ValueError(f"cfg_interval: expected a (low, high) pair of times in [0, 1], got {cfg_interval!r}")
    low, high = (_finite(v, "cfg_interval") for v in cfg_interval)
    if not 0 <= low <= high <= 1:
        raise ValueError(f"cfg_interval: expected 0 <= low <= high <= 1, got {cfg_interval!r}")
    threshold = _finite(cfg_norm_threshold, "cfg_norm_threshold")
    if threshold < 0:
        raise ValueError(f"cfg_norm_threshold: must not be negative (0 = off), got {cfg_norm_threshold!r}")
    return apg, (low, high), threshold


def _audio_input(value, name: str, rate: int, channels: int, max_seconds: float) -> np.ndarray:
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise ValueError(f"{name}: expected a (sample_rate, audio) pair")
    sample_rate, audio = value
    return audio_io.prepare(audio, sample_rate, rate, channels, field=name, max_seconds=max_seconds)


def _regions(starts, ends, source_samples: int, durations: list[float], rate: int) -> list[tuple[float, float]]:
    """Validated (start, end) pairs in seconds, sorted; errors name the offending argument."""
    if (starts is None) != (ends is None):
        missing = "inpaint_mask_end_seconds" if ends is None else "inpaint_mask_start_seconds"
        raise ValueError(f"{missing}: inpainting needs both the start and the end of each region")
    if isinstance(starts, (list, tuple)) != isinstance(ends, (list, tuple)):
        raise ValueError("inpaint_mask_end_seconds: give both bounds as numbers or both as lists")
    starts, ends = _per_item(starts, 1), _per_item(ends, 1)
    if len(starts) != len(ends):
        raise ValueError(f"inpaint_mask_end_seconds: {len(ends)} ends for {len(starts)} starts")
    if not starts:
        raise ValueError("inpaint_mask_start_seconds: no region given")
    regions = []
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        tag = f"[{i}]" if len(starts) > 1 else ""
        s, e = _finite(s, f"inpaint_mask_start_seconds{tag}"), _finite(e, f"inpaint_mask_end_seconds{tag}")
        if s < 0:
            raise ValueError(f"inpaint_mask_start_seconds{tag}: {s:g} s is before the start of the audio")
        if e <= s:
            raise ValueError(f"inpaint_mask_end_seconds{tag}: the end ({e:g} s) must be after the start ({s:g} s)")
        if s * rate > source_samples + 1:
            raise ValueError(f"inpaint_mask_start_seconds{tag}: {s:g} s is past the end of inpaint_audio "
                             f"({source_samples / rate:g} s)")
        if e * rate > round(min(durations) * rate) + 1:
            raise ValueError(f"inpaint_mask_end_seconds{tag}: {e:g} s is past the requested duration "
                             f"({min(durations):g} s)")
        regions.append((s, e))
    regions.sort()
    for (s0, e0), (s1, _) in itertools.pairwise(regions):
        if s1 < e0:
            raise ValueError(f"inpaint_mask_start_seconds: regions overlap ({s0:g}-{e0:g} s and a region "
                             f"starting at {s1:g} s)")
    return regions


def _covers(regions: list[tuple[float, float]], start: int, end: int, rate: int) -> bool:
    """Whether the sorted regions cover samples [start, end), up to one sample of rounding at each end."""
    reached = start
    for s, e in regions:
        if s * rate <= reached + 1 and e * rate > reached:
            reached = int(e * rate)
    return reached >= end - 1


# --------------------------------------------------------------------------------------------- progress


class _Progress:
    """Per-stage counters running across windows and items, reported as {"stage", "i", "n"}."""

    def __init__(self, callback: Callable[[dict], None] | None, totals: dict[str, int]):
        self.callback, self.totals = callback, totals
        self.done = dict.fromkeys(totals, 0)

    def advance(self, stage: str) -> None:
        self.done[stage] += 1
        if self.callback is not None:
            self.callback({"stage": stage, "i": self.done[stage], "n": self.totals[stage]})


@dataclass(frozen=True)
class ChainWindow:
    """One window of a chain, in output samples: it covers [offset, offset + length), is given the first
    ``context`` samples of that span as source audio and regenerates from ``regenerate`` on."""

    offset: int
    length: int
    context: int
    regenerate: int


def chain_windows(total: int, window: int, context: int, crossfade: int, source: int = 0) -> list[ChainWindow]:
    """Plan chained windows over ``total`` output samples.

    Without a source the first window is generated whole. Every later window starts ``context`` samples
    before the end of the audio made so far (fewer if less exists) and regenerates from
    ``context - crossfade`` on, so each join is crossfaded over audio that is being replaced anyway;
    right after a caller's source it regenerates from the source's end, leaving the source untouched.
    """
    if not 0 <= crossfade < context < window:
        raise ValueError("need 0 <= crossfade < context < window")
    plan, made = [], source
    if made == 0:
        plan.append(ChainWindow(0, min(total, window), 0, 0))
        made = plan[0].length
    after_source = source > 0
    while made < total:
        ctx = min(context, made)
        length = min(window, ctx + total - made)
        plan.append(ChainWindow(made - ctx, length, ctx, ctx if after_source else max(0, ctx - crossfade)))
        made += length - ctx
        after_source = False
    return plan


# --------------------------------------------------------------------------------------------- pipeline


class Pipeline:
    """A loaded SA3 model, its text encoder, and every generation mode on top of them.

    ``max_duration_seconds`` (the longest result) and ``max_input_seconds`` (the longest source audio) are
    checked before anything is allocated; an embedding application (the engine) may set them.
    ``chunked`` (default True): windows of more than ``CODEC_CHUNK`` frames are encoded and decoded in
    chunks, so memory stays bounded whatever the length; False follows the config's ``pretransform.chunked``
    (official default False), as the parity cases do.
    """

    def __init__(
        self,
        model: SA3Model,
        *,
        text_encoder=None,
        model_id: str = "sa3",
        max_duration_seconds: float = MAX_DURATION_SECONDS,
        max_input_seconds: float = MAX_INPUT_SECONDS,
        chunked: bool = True,
    ):
        for name, limit in (("max_duration_seconds", max_duration_seconds), ("max_input_seconds", max_input_seconds)):
            if _finite(limit, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {limit!r}")
        self.max_duration_seconds, self.max_input_seconds = float(max_duration_seconds), float(max_input_seconds)
        objective = model.diffusion_objective
        if objective not in OBJECTIVE_DEFAULTS:
            raise ConfigError(f"config field model.diffusion.diffusion_objective: {objective!r} is not supported "
                              f"(expected one of {sorted(OBJECTIVE_DEFAULTS)})")
        heads = model.conditioner.conditioners
        text_ids = [key for key, head in heads.items() if isinstance(head, TextConditioner)]
        numbers = [key for key, head in heads.items() if isinstance(head, NumberConditioner)]
        if len(text_ids) != 1 or numbers != [DURATION_ID]:
            raise ConfigError(f"model.conditioning: expected one text conditioner and the {DURATION_ID!r} number "
                              f"conditioner, got {dict((k, type(h).__name__) for k, h in heads.items())}")
        used = {*model.layout.cross_attention_ids, *model.layout.global_ids, *model.layout.local_add_ids}
        unknown = used - set(heads) - set(LOCAL_ADD_IDS)
        if unknown:
            raise ConfigError(f"model.diffusion: conditioning ids {sorted(unknown)} are not supported")
        self.model, self.text_encoder, self.model_id = model, text_encoder, model_id
        self.chunked = bool(chunked) or model.pretransform.chunked
        self.dit = model.dit  # what the sampler calls: this, or its CoreML export (``coreml.select_dit``)
        self.text_id = text_ids[0]
        self.geometry = Geometry.of(model)
        self.shift = sampling_shift(model.config)
        parameter = next(model.dit.parameters())
        self.device, self.dtype = str(parameter.device), parameter.dtype
        self.default_sampler, self.default_steps, self.default_cfg_scale = OBJECTIVE_DEFAULTS[objective]
        self.is_base = objective == "rectified_flow"
        self._loras: list[tuple[tuple, Lora]] = []  # (file identity, handle) in load (= stacking) order

    @property
    def uses_coreml(self) -> bool:
        """Whether the sampler's DiT is a CoreML export rather than the torch module."""
        return self.dit is not self.model.dit

    @classmethod
    def load(
        cls,
        model: str | os.PathLike,
        *,
        models_dir: str | os.PathLike | None = None,
        device: str | None = None,
        dtype: str | None = None,
        autoencoder_dtype: str | None = None,
        max_duration_seconds: float = MAX_DURATION_SECONDS,
        max_input_seconds: float = MAX_INPUT_SECONDS,
    ) -> Pipeline:
        """A model id (``small-music``, ``tiny-random``, ...) or a model folder, found offline (``models.resolve``).

        ``device`` None/"auto": CUDA, then MPS, then CPU; ``dtype`` (DiT and conditioner heads) None: float16
        on CUDA, float32 elsewhere; ``autoencoder_dtype`` (SAME) None: float32 everywhere (``device.py``).
        """
        from .coreml import select_dit
        from .models import resolve
        from .prompt_encoders import open_text_encoder

        resolved = resolve(str(model), models_dir)
        forced_coreml, device = device == "coreml", pick_device(device)
        sa3 = SA3Model.from_pretrained(
            resolved.weights, config=resolved.config, dtype=DTYPES[pick_dtype(device, dtype)],
            autoencoder_dtype=DTYPES[pick_autoencoder_dtype(autoencoder_dtype)], device=device,
        )
        # T5Gemma (~280M parameters) stays float32 as the official code loads it (it never casts it).
        text_encoder = open_text_encoder(sa3.conditioner.conditioners.values(), resolved.text_encoder, device)
        pipeline = cls(sa3, text_encoder=text_encoder, model_id=resolved.id,
                       max_duration_seconds=max_duration_seconds, max_input_seconds=max_input_seconds)
        pipeline.dit = select_dit(sa3.dit, resolved.folder, device, forced=forced_coreml)
        return pipeline

    @property
    def sample_rate(self) -> int:
        return self.geometry.sample_rate

    @property
    def max_seconds(self) -> float:
        """The longest one window generates; longer durations are chained windows."""
        return self.geometry.max_seconds

    @property
    def channels(self) -> int:
        return int(self.model.autoencoder.io_channels)

    # ----------------------------------------------------------------------------------- building blocks

    def encode_text(self, prompts: Sequence[str]) -> Text:
        if self.text_encoder is None:
            raise RuntimeError("this pipeline has no text encoder: give windows precomputed text encodings")
        head = self.model.conditioner.conditioners[self.text_id]
        hidden, mask = self.text_encoder.encode(list(prompts), head.max_length)
        return hidden.to(self.device), mask.to(self.device)

    def encode_audio(self, audio: np.ndarray, samples: int) -> torch.Tensor:
        """(channels, n) audio at the model rate, cut or zero-padded to ``samples`` -> (1, C, T) float32 latents."""
        x = torch.from_numpy(np.ascontiguousarray(audio[:, :samples], dtype=np.float32))
        x = F.pad(x, (0, samples - x.shape[1]))[None]
        latents = codec_encode(self.model.autoencoder, x.to(self.device), self.chunked)
        frames = self.geometry.frames(samples)
        if latents.shape[-1] != frames:
            raise RuntimeError(f"the autoencoder returned {latents.shape[-1]} frames for {samples} samples, "
                               f"expected {frames}")
        return latents

    def condition(self, text: Text, seconds: Sequence[float], inpaint_mask, masked_input) -> DiTConditioning:
        """The DiT's conditioning inputs: text head, duration head and local-add inputs, assembled per config."""
        hidden, mask = text
        return self.model.conditioning({
            self.text_id: (hidden.to(self.device), mask.to(self.device)),
            DURATION_ID: list(seconds),
            "inpaint_mask": inpaint_mask.to(self.dtype),
            "inpaint_masked_input": masked_input.to(self.dtype),
        })

    def sample_window(
        self,
        window: Window,
        noise,
        *,
        on_step: Callback | None = None,
        on_encode: Callable[[], None] | None = None,
        timings: dict | None = None,
    ) -> Sampled:
        """Run one window's sampler; returns latents and the tensors they were made from.

        ``noise`` has ``initial(shape) -> tensor`` (drawn first, as officially) and ``noise(step, like)``
        for the samplers that re-noise. ``on_step`` gets the sampler's per-step dict (x, t, denoised, i, n).
        """
        g, device = self.geometry, self.device
        batch = len(window.seconds)
        samples = g.window_samples(window.seconds)
        frames = g.frames(samples)
        channels = self.model.io_channels
        padding_mask = g.padding_mask(window.seconds, frames).to(device)
        # the sampler state stays float32 whatever the DiT's dtype (the DiT casts what it is given)
        x = noise.initial((batch, channels, frames)).to(device=device, dtype=torch.float32)

        mask = torch.zeros(batch, 1, frames, device=device)
        masked = torch.zeros(batch, channels, frames, device=device)
        source_latents = init_latents = None
        if window.source is not None:
            source_latents = self._encode_reported(window.source, samples, on_encode, timings)
            mask = g.inpaint_mask(window.regions, window.seconds, samples, frames).to(device)
            masked = source_latents * mask
        if window.init is not None:
            init_latents = self._encode_reported(window.init, samples, on_encode, timings)

        cond = self.condition(window.text, window.seconds, mask, masked)
        negative = None
        if window.negative_text is not None:
            negative = self.condition(window.negative_text, window.seconds, mask, masked)
        sigma_max = 1.0
        if init_latents is not None:
            sigma_max = window.init_noise_level
            x = init_latents * (1 - sigma_max) + x * sigma_max
        sigmas = build_schedule(window.steps, sigma_max, g.effective_frames(window.seconds), self.shift,
                                device=device)
        uncond = None
        if negative is not None:
            uncond = uncond_context(cond.cross_attn_cond, negative.cross_attn_cond, negative.cross_attn_mask)
        model = guided_model(
            partial(self.dit, padding_mode=window.padding_mode),
            cond.cross_attn_cond, cond.global_cond, cond.local_add_cond, padding_mask,
            uncond_cross=uncond, cfg_scale=window.cfg_scale, apg_scale=window.apg_scale,
            cfg_interval=window.cfg_interval, cfg_norm_threshold=window.cfg_norm_threshold,
        )
        with _timed(timings, "sample"):
            latents = SAMPLERS[window.sampler](model, x, sigmas, noise=noise, callback=on_step)
        return Sampled(latents, sigmas, padding_mask, cond, negative, mask, source_latents, masked, samples)

    def _encode_reported(self, audio: np.ndarray, samples: int, on_encode, timings: dict | None) -> torch.Tensor:
        with _timed(timings, "encode"):
            latents = self.encode_audio(audio, samples)
        if on_encode is not None:
            on_encode()
        return latents

    def decode_items(
        self, sampled: Sampled, seconds: Sequence[float], on_chunk: Callable[[], None] | None = None
    ) -> list[np.ndarray]:
        """Per item: decode its own window's frames, zero past its valid frames, clamp, cut to its duration.

        Each item decodes the frames it would have alone, so chunk boundaries (and the result) do not
        depend on what it was batched with.
        """
        g = self.geometry
        frames = sampled.latents.shape[-1]
        valid = g.valid_frames(seconds, frames)
        out = []
        for i, (own, s) in enumerate(zip(g.own_frames(seconds), seconds, strict=True)):
            latents = sampled.latents[i : i + 1, :, :own]
            progress = None if on_chunk is None else (lambda done, total: on_chunk())
            audio = codec_decode(self.model.autoencoder, latents, self.chunked, progress)[0]
            audio[:, valid[i] * g.ratio :] = 0  # padding frames decode to garbage
            audio = audio.clamp(-1, 1)[:, : round(s * g.sample_rate)]
            out.append(audio.cpu().numpy())
        return out

    # ----------------------------------------------------------------------------------- generate

    def generate(
        self,
        prompt: str | list[str] = "",
        *,
        negative_prompt: str | list[str] | None = None,
        duration: float | list[float] = 10.0,
        steps: int | None = None,
        cfg_scale: float | None = None,
        seed: int | list[int] = -1,
        batch_size: int = 1,
        init_audio: tuple[int, np.ndarray] | None = None,
        init_noise_level: float = 0.9,
        inpaint_audio: tuple[int, np.ndarray] | None = None,
        inpaint_mask_start_seconds: float | list[float] | None = None,
        inpaint_mask_end_seconds: float | list[float] | None = None,
        splice: bool = True,
        loras: list[tuple[str, float]] | None = None,
        callback: Callable[[dict], None] | None = None,
        sampler: str | None = None,
        padding_mode: str = "mask",
        apg_scale: float = 1.0,
        cfg_interval: tuple[float, float] = (0.0, 1.0),
        cfg_norm_threshold: float = 0.0,
    ) -> list[Generation]:
        """Generate ``batch_size`` clips (or one per list entry); see the module docstring.

        - Lists for prompt / negative_prompt / duration / seed give one value per item. One seed for a
          batch gives items seed, seed+1, ... (-1: random), so each item can be regenerated alone.
        - ``init_audio``: audio-to-audio from that audio noised to ``init_noise_level`` (1 = pure noise).
        - ``inpaint_audio`` + regions: regenerate the regions, keep the rest; a duration beyond the source
          with a region from its end continues it. ``splice`` pastes the kept audio back bit-identically
          (equal-power crossfades inside each region); False returns the raw model output, as officially.
        - Durations beyond ``max_seconds`` (text to audio, continuation) are chained windows, each given
          the last seconds of the one before as context, crossfaded at the joins; the joins are always
          spliced.
        - ``loras``: (path, strength) adapters, stacked in order; kept loaded between calls.
        - ``callback`` gets {"stage": "encode" | "sample" | "decode", "i", "n"}, counting across windows;
          an exception raised in it aborts the call and propagates.
        - ``sampler``: "pingpong", "euler" or "dpmpp" (default per model); ``padding_mode``: "mask" (true
          masking, as the models were trained) or "vzero" (the official CPU path).
        - Guidance options (official names and defaults; they matter only with ``cfg_scale`` != 1):
          ``apg_scale`` (1: adaptive projected guidance, 0: plain CFG, between: a blend), ``cfg_interval``
          (low, high): guide only while low <= t <= high, ``cfg_norm_threshold`` (> 0: cap the norm of the
          guidance difference).
        """
        started = time.perf_counter()
        request = self._request(
            prompt, negative_prompt, duration, steps, cfg_scale, seed, batch_size, init_audio, init_noise_level,
            inpaint_audio, inpaint_mask_start_seconds, inpaint_mask_end_seconds, splice, loras, sampler,
            padding_mode, _guidance(apg_scale, cfg_interval, cfg_norm_threshold),
        )
        if callback is not None and not callable(callback):
            raise ValueError("callback: expected a callable")
        self._apply_loras(request.loras)
        timings: dict[str, float] = {}
        with torch.no_grad(), parametrize.cached():
            if request.chained:
                plans = [self._chain_plan(request, d) for d in request.durations]
                progress = _Progress(callback, self._chain_totals(request, plans))
                results = [self._chain(request, i, plan, progress, timings) for i, plan in enumerate(plans)]
            else:
                progress = _Progress(callback, self._window_totals(request))
                results = self._single(request, progress, timings)
        timings["total"] = time.perf_counter() - started
        return [
            Generation(audio, self.sample_rate, request.seeds[i], self._params(request, i, windows), dict(timings))
            for i, (audio, windows) in enumerate(results)
        ]

    # The modes on a source recording. ``options`` are generate()'s; validation is generate()'s, so errors
    # name its arguments (inpaint_audio / init_audio, inpaint_mask_start_seconds[i], duration, ...).

    def inpaint(
        self, audio, sample_rate, regions: list[tuple[float, float]], prompt="", **options
    ) -> list[Generation]:
        """``audio`` with ``regions`` ((start, end) in seconds) regenerated, the rest kept (spliced back unless
        ``splice=False``). ``duration`` defaults to the source's length."""
        if not isinstance(regions, (list, tuple)) or not regions or not all(
            isinstance(region, (list, tuple)) and len(region) == 2 for region in regions
        ):
            raise ValueError(f"regions: expected a non-empty list of (start, end) pairs in seconds, got {regions!r}")
        options.setdefault("duration", audio_io.length_seconds(audio, sample_rate, "inpaint_audio"))
        return self.generate(
            prompt, inpaint_audio=(sample_rate, audio), inpaint_mask_start_seconds=[s for s, _ in regions],
            inpaint_mask_end_seconds=[e for _, e in regions], **options,
        )

    def extend(self, audio, sample_rate, duration: float, prompt="", **options) -> list[Generation]:
        """``audio`` continued: ``duration`` is the length of the result, the source included, so it must be
        longer than the source. The source is kept as it is; beyond ``max_seconds`` windows are chained."""
        source = audio_io.length_seconds(audio, sample_rate, "inpaint_audio")
        total = _finite(duration, "duration")
        if total <= source:
            raise ValueError(f"duration: {total:g} s must be longer than the source ({source:g} s), "
                             "as it is the length of the result")
        return self.generate(
            prompt, duration=total, inpaint_audio=(sample_rate, audio), inpaint_mask_start_seconds=source,
            inpaint_mask_end_seconds=total, **options,
        )

    def variation(self, audio, sample_rate, prompt="", *, init_noise_level=0.9, **options) -> list[Generation]:
        """Audio-to-audio: ``audio`` noised to ``init_noise_level`` (1 = pure noise) and sampled from there.
        ``duration`` defaults to the source's length (at most ``max_seconds``)."""
        options.setdefault("duration", audio_io.length_seconds(audio, sample_rate, "init_audio"))
        return self.generate(prompt, init_audio=(sample_rate, audio), init_noise_level=init_noise_level, **options)

    def _request(
        self, prompt, negative_prompt, duration, steps, cfg_scale, seed, batch_size, init_audio, init_noise_level,
        inpaint_audio, starts, ends, splice, loras, sampler, padding_mode, guidance,
    ) -> _Request:
        size = _batch_size(batch_size, prompt=prompt, negative_prompt=negative_prompt, duration=duration, seed=seed)
        prompts = _strings(prompt, size, "prompt")
        negatives = None if negative_prompt is None else _strings(negative_prompt, size, "negative_prompt")
        durations = [_finite(d, "duration") for d in _per_item(duration, size)]
        for d in durations:
            if d * self.sample_rate < 1:
                raise ValueError(f"duration: must be positive (at least one sample), got {d!r}")
            if d > self.max_duration_seconds:
                raise ValueError(f"duration: {d:g} s is longer than the limit of {self.max_duration_seconds:g} s")
        steps = self.default_steps if steps is None else steps
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"steps: expected a positive integer, got {steps!r}")
        cfg_scale = self.default_cfg_scale if cfg_scale is None else _finite(cfg_scale, "cfg_scale")
        if cfg_scale < 0:
            raise ValueError(f"cfg_scale: must not be negative, got {cfg_scale!r}")
        sampler = self.default_sampler if sampler is None else sampler
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler: expected one of {sorted(SAMPLERS)}, got {sampler!r}")
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode: expected one of {PADDING_MODES}, got {padding_mode!r}")
        if not isinstance(splice, (bool, np.bool_)):
            raise ValueError(f"splice: expected True or False, got {splice!r}")
        chained = max(durations) > self.max_seconds
        init, level = self._init_inputs(init_audio, init_noise_level, durations, chained)
        source, regions, mode = self._inpaint_inputs(inpaint_audio, starts, ends, durations, chained)
        if init is not None and source is None:
            mode = "variation"
        return _Request(
            prompts, negatives, durations, _seeds(seed, size), steps, cfg_scale, *guidance, sampler, padding_mode,
            source, regions_to_samples([s for s, _ in regions], [e for _, e in regions], self.sample_rate), regions,
            init, level, bool(splice), self._lora_list(loras), mode, chained,
        )

    def _init_inputs(self, init_audio, init_noise_level, durations: list[float], chained: bool):
        """(init audio at the model rate or None, noise level)."""
        if init_audio is None:
            return None, 1.0
        rate = self.sample_rate
        init = _audio_input(init_audio, "init_audio", rate, self.channels, self.max_input_seconds)
        level = _finite(init_noise_level, "init_noise_level")
        if not 0 < level <= 1:
            raise ValueError(f"init_noise_level: must be in (0, 1], got {level!r}")
        if init.shape[1] > round(min(durations) * rate) + 1:
            raise ValueError(f"init_audio: {init.shape[1] / rate:g} s is longer than duration "
                             f"({min(durations):g} s); pass duration={init.shape[1] / rate:g}")
        if chained:
            raise ValueError(f"duration: audio-to-audio is limited to {self.max_seconds:g} s")
        return init, level

    def _inpaint_inputs(self, inpaint_audio, starts, ends, durations: list[float], chained: bool):
        """(source at the model rate or None, regions in seconds, mode)."""
        if inpaint_audio is None:
            if starts is not None or ends is not None:
                raise ValueError("inpaint_audio: regions were given but no audio to inpaint")
            return None, [], "generate"
        rate = self.sample_rate
        source = _audio_input(inpaint_audio, "inpaint_audio", rate, self.channels, self.max_input_seconds)
        n = source.shape[1]
        regions = _regions(starts, ends, n, durations, rate)
        if n > round(min(durations) * rate) + 1:
            raise ValueError(f"inpaint_audio: {n / rate:g} s is longer than duration ({min(durations):g} s); "
                             f"pass duration={n / rate:g}")
        longest = round(max(durations) * rate)
        if longest <= n + 1:
            mode = "inpaint"
        elif _covers(regions, n, longest, rate):
            mode = "continue"
        else:
            raise ValueError(
                f"duration: {max(durations):g} s is longer than inpaint_audio ({n / rate:g} s) but no region "
                "regenerates what follows the source; pass a region from the source's end to the duration to "
                "continue it, or a duration equal to the source to inpaint it")
        if chained and (mode != "continue" or len(regions) != 1 or abs(regions[0][0] * rate - n) > 1):
            raise ValueError(f"duration: beyond {self.max_seconds:g} s only text to audio and continuation "
                             "(one region from the end of the source) are supported")
        return source, regions, mode

    @staticmethod
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
            out.append((path.resolve(), _finite(entry[1], f"loras[{i}] strength")))
        if len({p for p, _ in out}) != len(out):
            raise ValueError("loras: the same file is listed twice")
        return out

    def _apply_loras(self, requested: list[tuple[Path, float]]) -> None:
        """Keep the loaded adapters that are still wanted in the same stacking order, unload the rest, load
        the new ones, then set every strength (no reload). A file changed on disk counts as a new file."""
        keys = [(str(p), p.stat().st_mtime_ns, p.stat().st_size) for p, _ in requested]
        keep = 0
        while keep < min(len(keys), len(self._loras)) and self._loras[keep][0] == keys[keep]:
            keep += 1
        for _, lora in reversed(self._loras[keep:]):
            unload_lora(self.model, lora)
        del self._loras[keep:]
        for i in range(keep, len(requested)):
            path, strength = requested[i]
            try:
                lora = load_lora(self.model, path, strength)
            except (ValueError, OSError) as exc:
                raise ValueError(f"loras[{i}]: {exc}") from None
            self._loras.append((keys[i], lora))
        for (_, lora), (_, strength) in zip(self._loras, requested, strict=True):
            set_lora_strength(self.model, lora, strength)

    def _window(self, request: _Request, seconds: list[float], text: Text, negative: Text | None, **audio) -> Window:
        return Window(
            text=text, seconds=seconds, steps=request.steps, sampler=request.sampler, cfg_scale=request.cfg_scale,
            apg_scale=request.apg_scale, cfg_interval=request.cfg_interval,
            cfg_norm_threshold=request.cfg_norm_threshold, negative_text=negative, padding_mode=request.padding_mode,
            init_noise_level=request.init_noise_level, **audio,
        )

    def _texts(self, request: _Request, items: list[int], timings: dict) -> tuple[Text, Text | None]:
        with _timed(timings, "text"):
            text = self.encode_text([request.prompts[i] for i in items])
            negative = None
            if request.negatives is not None and request.cfg_scale != 1.0:  # without guidance it is never used
                negative = self.encode_text([request.negatives[i] for i in items])
        return text, negative

    def _window_totals(self, request: _Request) -> dict[str, int]:
        return {
            "encode": (request.source is not None) + (request.init is not None),
            "sample": request.steps,
            "decode": sum(decode_chunks(f, self.chunked) for f in self.geometry.own_frames(request.durations)),
        }

    def _single(self, request: _Request, progress: _Progress, timings: dict) -> list[tuple[np.ndarray, int]]:
        items = list(range(request.size))
        text, negative = self._texts(request, items, timings)
        window = self._window(request, request.durations, text, negative, source=request.source,
                              regions=request.regions, init=request.init)
        noise = SeededNoise.from_seeds(request.seeds, self.geometry.own_frames(request.durations))
        sampled = self.sample_window(window, noise, on_step=lambda _: progress.advance("sample"),
                                     on_encode=lambda: progress.advance("encode"), timings=timings)
        with _timed(timings, "decode"):
            audios = self.decode_items(sampled, request.durations, lambda: progress.advance("decode"))
        if request.splice and request.source is not None:
            fade = round(SPLICE_FADE_SECONDS * self.sample_rate)
            audios = [audio_io.splice(request.source, a, request.regions, fade) for a in audios]
        return [(a, 1) for a in audios]

    # ----------------------------------------------------------------------------------- chained windows

    def _chain_sizes(self) -> tuple[int, int, int]:
        window = self.geometry.max_samples
        context = min(round(CHAIN_CONTEXT_SECONDS * self.sample_rate), window // 3)
        crossfade = min(round(CHAIN_CROSSFADE_SECONDS * self.sample_rate), context // 4)
        return window, context, crossfade

    def _chain_plan(self, request: _Request, duration: float) -> list[ChainWindow]:
        source = 0 if request.source is None else request.source.shape[1]
        return chain_windows(round(duration * self.sample_rate), *self._chain_sizes(), source=source)

    def _chain_totals(self, request: _Request, plans: list[list[ChainWindow]]) -> dict[str, int]:
        chunked, rate = self.chunked, self.sample_rate
        windows = [w for plan in plans for w in plan]
        return {
            "encode": sum(1 for w in windows if w.context > 0),
            "sample": request.steps * len(windows),
            "decode": sum(decode_chunks(self.geometry.own_frames([w.length / rate])[0], chunked) for w in windows),
        }

    def _chain(self, request: _Request, item: int, plan: list[ChainWindow], progress: _Progress, timings: dict):
        """Item ``item`` as chained windows; one generator runs on across its windows."""
        rate = self.sample_rate
        out = np.zeros((self.channels, round(request.durations[item] * rate)), dtype=np.float32)
        if request.source is not None:
            out[:, : request.source.shape[1]] = request.source
        text, negative = self._texts(request, [item], timings)
        generator = torch.Generator().manual_seed(request.seeds[item])
        crossfade = self._chain_sizes()[2]
        for w in plan:
            seconds = [w.length / rate]
            audio = {}
            if w.context > 0:
                audio = {"source": out[:, w.offset : w.offset + w.context].copy(), "regions": [(w.regenerate, w.length)]}
            window = self._window(request, seconds, text, negative, **audio)
            noise = SeededNoise([generator], self.geometry.own_frames(seconds))
            sampled = self.sample_window(window, noise, on_step=lambda _: progress.advance("sample"),
                                         on_encode=lambda: progress.advance("encode"), timings=timings)
            with _timed(timings, "decode"):
                (generated,) = self.decode_items(sampled, seconds, lambda: progress.advance("decode"))
            if w.context > 0:
                generated = audio_io.splice(audio["source"], generated, audio["regions"], crossfade)
            out[:, w.offset : w.offset + w.length] = generated
        return out, len(plan)

    # ----------------------------------------------------------------------------------- report

    def _params(self, request: _Request, i: int, windows: int) -> dict:
        params = {
            "model": self.model_id,
            "mode": request.mode,
            "prompt": request.prompts[i],
            "negative_prompt": None if request.negatives is None else request.negatives[i],
            "seed": request.seeds[i],
            "duration": request.durations[i],
            "steps": request.steps,
            "cfg_scale": request.cfg_scale,
            "apg_scale": request.apg_scale,
            "cfg_interval": list(request.cfg_interval),
            "cfg_norm_threshold": request.cfg_norm_threshold,
            "sampler": request.sampler,
            "padding_mode": request.padding_mode,
            "sample_rate": self.sample_rate,
            "batch_size": request.size,
            "index": i,
            "windows": windows,
            "loras": [[str(p), s] for p, s in request.loras],
        }
        if request.init is not None:
            params["init_noise_level"] = request.init_noise_level
        if request.source is not None:
            params["inpaint_regions"] = [[s, e] for s, e in request.region_seconds]
            params["splice"] = request.splice or request.chained
        return params
