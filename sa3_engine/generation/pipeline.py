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

import os
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils import parametrize

from bridge.results import Generation
from sa3_engine import audio as audio_io
from sa3_engine.generation import chain
from sa3_engine.generation.codec import DECODE_CONTEXT, codec_decode, codec_encode, decode_chunks
from sa3_engine.generation.geometry import Geometry
from sa3_engine.generation.noise import SeededNoise
from sa3_engine.generation.progress import Progress, timed
from sa3_engine.generation.request import Request, finite, guidance
from sa3_engine.generation.request import build as build_request
from sa3_engine.generation.window import Sampled, Text, Window
from sa3_engine.models.conditioners import DiTConditioning, NumberConditioner, TextConditioner
from sa3_engine.models.config import ConfigError
from sa3_engine.models.dit import StepCache
from sa3_engine.models.lora import Lora, load_lora, set_lora_strength, unload_lora
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.runtime.device import DTYPES, pick_device, pick_precision, precision_name
from sa3_engine.sampling import SAMPLERS
from sa3_engine.sampling.guidance import guided_model, uncond_context
from sa3_engine.sampling.schedules import Callback, build_schedule, sampling_shift

SPLICE_FADE_SECONDS = 0.02  # equal-power crossfade into and out of each regenerated region
# Defaults of the limits a Pipeline enforces before allocating anything: the longest result (a chained
# result is held whole in memory) and the longest source audio.
MAX_DURATION_SECONDS = 1800.0
MAX_INPUT_SECONDS = 1800.0

# diffusion objective -> (sampler, steps, cfg_scale): post-trained models are distilled for 8 ping-pong
# steps without guidance; base models use 50 Euler steps with CFG 7 (official docs, Gradio).
OBJECTIVE_DEFAULTS = {"rf_denoiser": ("pingpong", 8, 1.0), "rectified_flow": ("euler", 50, 7.0)}
LOCAL_ADD_IDS = ("inpaint_mask", "inpaint_masked_input")
DURATION_ID = "seconds_total"


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
            if finite(limit, name) <= 0:
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
        self.precision = precision_name(self.dtype, model.autoencoder.dtype)  # "fp32" or "fast", as reported
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
        precision: str | None = None,
        compile: bool = False,
        max_duration_seconds: float = MAX_DURATION_SECONDS,
        max_input_seconds: float = MAX_INPUT_SECONDS,
    ) -> Pipeline:
        """A model id (``small-music``, ``tiny-random``, ...) or a model folder, found offline (``models.resolve``).

        ``device`` None/"auto": CUDA, then MPS, then CPU. ``precision`` "fp32" (float32, the parity mode),
        "fast" (bfloat16 on CPU; float16 DiT + float32 SAME on CUDA) or None/"auto" (fast on CUDA and on CPUs
        with native bfloat16, else fp32); ``dtype`` (DiT and conditioner heads) and ``autoencoder_dtype``
        (SAME) override its choice (``device.pick_precision``). The weights are cast once, from the file.
        ``compile``: ``torch.compile`` the DiT's blocks (fuses the element-wise work between the matrix
        products; costs a compilation on the first call, see docs/performance.md; not with CoreML).
        """
        from sa3_engine.models.prompt_encoders import open_text_encoder
        from sa3_engine.runtime.coreml import select_dit
        from sa3_engine.weights.registry import resolve

        resolved = resolve(str(model), models_dir)
        forced_coreml, device = device == "coreml", pick_device(device)
        dtype, autoencoder_dtype = pick_precision(device, precision, dtype, autoencoder_dtype)
        sa3 = SA3Model.from_pretrained(
            resolved.weights, config=resolved.config, dtype=DTYPES[dtype],
            autoencoder_dtype=DTYPES[autoencoder_dtype], device=device,
        )
        # T5Gemma (~280M parameters) stays float32 as the official code loads it (it never casts it).
        text_encoder = open_text_encoder(sa3.conditioner.conditioners.values(), resolved.text_encoder, device)
        pipeline = cls(sa3, text_encoder=text_encoder, model_id=resolved.id,
                       max_duration_seconds=max_duration_seconds, max_input_seconds=max_input_seconds)
        pipeline.dit = select_dit(sa3.dit, resolved.folder, device, forced=forced_coreml)
        if compile:
            sa3.compile_blocks(dit=not pipeline.uses_coreml)
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
        dit = partial(self.dit, padding_mode=window.padding_mode)
        if not self.uses_coreml:  # conditioning-only work (cross-attention K/V, local-add) once per window
            dit = partial(dit, cache=StepCache())
        model = guided_model(
            dit,
            cond.cross_attn_cond, cond.global_cond, cond.local_add_cond, padding_mask,
            uncond_cross=uncond, cfg_scale=window.cfg_scale, apg_scale=window.apg_scale,
            cfg_interval=window.cfg_interval, cfg_norm_threshold=window.cfg_norm_threshold,
        )
        with timed(timings, "sample"):
            latents = SAMPLERS[window.sampler](model, x, sigmas, noise=noise, callback=on_step)
        return Sampled(latents, sigmas, padding_mask, cond, negative, mask, source_latents, masked, samples)

    def _encode_reported(self, audio: np.ndarray, samples: int, on_encode, timings: dict | None) -> torch.Tensor:
        with timed(timings, "encode"):
            latents = self.encode_audio(audio, samples)
        if on_encode is not None:
            on_encode()
        return latents

    def decoded_frames(self, seconds: Sequence[float]) -> list[int]:
        """Latent frames each item decodes: chunked, its duration plus ``DECODE_CONTEXT``; unchunked (the
        parity cases), its whole window, as the official pipeline does."""
        return self.geometry.decoded_frames(seconds, DECODE_CONTEXT if self.chunked else None)

    def decode_items(
        self, sampled: Sampled, seconds: Sequence[float], on_chunk: Callable[[], None] | None = None
    ) -> list[np.ndarray]:
        """Per item: decode its frames (:meth:`decoded_frames`), zero past its valid frames, clamp, cut to
        its duration.

        Each item decodes the frames it would have alone, so chunk boundaries (and the result) do not
        depend on what it was batched with.
        """
        g = self.geometry
        frames = sampled.latents.shape[-1]
        valid = g.valid_frames(seconds, frames)
        out = []
        for i, (decoded, s) in enumerate(zip(self.decoded_frames(seconds), seconds, strict=True)):
            latents = sampled.latents[i : i + 1, :, :decoded]
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
        mask_start: float | list[float] | None = None,
        mask_end: float | list[float] | None = None,
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
        request = build_request(
            self, prompt, negative_prompt, duration, steps, cfg_scale, seed, batch_size, init_audio, init_noise_level,
            inpaint_audio, mask_start, mask_end, splice, loras, sampler,
            padding_mode, guidance(apg_scale, cfg_interval, cfg_norm_threshold),
        )
        if callback is not None and not callable(callback):
            raise ValueError("callback: expected a callable")
        self._apply_loras(request.loras)
        timings: dict[str, float] = {}
        with torch.no_grad(), parametrize.cached():
            if request.chained:
                plans = [chain.plan(self, request, d) for d in request.durations]
                progress = Progress(callback, chain.totals(self, request, plans))
                results = [chain.run(self, request, i, plan, progress, timings) for i, plan in enumerate(plans)]
            else:
                progress = Progress(callback, self._window_totals(request))
                results = self._single(request, progress, timings)
        timings["total"] = time.perf_counter() - started
        for i, (audio, _) in enumerate(results):  # NaN/inf must never reach a file or a mix bus
            audio_io.check_finite(audio, f"the generated audio of item {i}")
        return [
            Generation(audio, self.sample_rate, request.seeds[i], self._params(request, i, windows), dict(timings))
            for i, (audio, windows) in enumerate(results)
        ]

    # The modes on a source recording. ``options`` are generate()'s; validation is generate()'s, so errors
    # name its arguments (inpaint_audio / init_audio, mask_start[i], duration, ...).

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
            prompt, inpaint_audio=(sample_rate, audio), mask_start=[s for s, _ in regions],
            mask_end=[e for _, e in regions], **options,
        )

    def extend(self, audio, sample_rate, duration: float, prompt="", **options) -> list[Generation]:
        """``audio`` continued: ``duration`` is the length of the result, the source included, so it must be
        longer than the source. The source is kept as it is; beyond ``max_seconds`` windows are chained."""
        source = audio_io.length_seconds(audio, sample_rate, "inpaint_audio")
        total = finite(duration, "duration")
        if total <= source:
            raise ValueError(f"duration: {total:g} s must be longer than the source ({source:g} s), "
                             "as it is the length of the result")
        return self.generate(
            prompt, duration=total, inpaint_audio=(sample_rate, audio), mask_start=source,
            mask_end=total, **options,
        )

    def variation(self, audio, sample_rate, prompt="", *, init_noise_level=0.9, **options) -> list[Generation]:
        """Audio-to-audio: ``audio`` noised to ``init_noise_level`` (1 = pure noise) and sampled from there.
        ``duration`` defaults to the source's length (at most ``max_seconds``)."""
        options.setdefault("duration", audio_io.length_seconds(audio, sample_rate, "init_audio"))
        return self.generate(prompt, init_audio=(sample_rate, audio), init_noise_level=init_noise_level, **options)

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

    def _window(self, request: Request, seconds: list[float], text: Text, negative: Text | None, **audio) -> Window:
        return Window(
            text=text, seconds=seconds, steps=request.steps, sampler=request.sampler, cfg_scale=request.cfg_scale,
            apg_scale=request.apg_scale, cfg_interval=request.cfg_interval,
            cfg_norm_threshold=request.cfg_norm_threshold, negative_text=negative, padding_mode=request.padding_mode,
            init_noise_level=request.init_noise_level, **audio,
        )

    def _texts(self, request: Request, items: list[int], timings: dict) -> tuple[Text, Text | None]:
        with timed(timings, "text"):
            text = self.encode_text([request.prompts[i] for i in items])
            negative = None
            if request.negatives is not None and request.cfg_scale != 1.0:  # without guidance it is never used
                negative = self.encode_text([request.negatives[i] for i in items])
        return text, negative

    def _window_totals(self, request: Request) -> dict[str, int]:
        return {
            "encode": (request.source is not None) + (request.init is not None),
            "sample": request.steps,
            "decode": sum(decode_chunks(f, self.chunked) for f in self.decoded_frames(request.durations)),
        }

    def _single(self, request: Request, progress: Progress, timings: dict) -> list[tuple[np.ndarray, int]]:
        items = list(range(request.size))
        text, negative = self._texts(request, items, timings)
        window = self._window(request, request.durations, text, negative, source=request.source,
                              regions=request.regions, init=request.init)
        noise = SeededNoise.from_seeds(request.seeds, self.geometry.own_frames(request.durations))
        sampled = self.sample_window(window, noise, on_step=lambda _: progress.advance("sample"),
                                     on_encode=lambda: progress.advance("encode"), timings=timings)
        with timed(timings, "decode"):
            audios = self.decode_items(sampled, request.durations, lambda: progress.advance("decode"))
        if request.splice and request.source is not None:
            fade = round(SPLICE_FADE_SECONDS * self.sample_rate)
            audios = [audio_io.splice(request.source, a, request.regions, fade) for a in audios]
        return [(a, 1) for a in audios]

    # ----------------------------------------------------------------------------------- report

    def _params(self, request: Request, i: int, windows: int) -> dict:
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
            "precision": self.precision,
            "dtype": str(self.dtype).removeprefix("torch."),
            "autoencoder_dtype": str(self.model.autoencoder.dtype).removeprefix("torch."),
            "compiled": self.model.dit.compiled and not self.uses_coreml,
            "batch_size": request.size,
            "index": i,
            "windows": windows,
            "loras": [[str(p), s] for p, s in request.loras],
        }
        if request.init is not None:
            params["init_noise_level"] = request.init_noise_level
        if request.source is not None:
            params["mask_start"] = [s for s, _ in request.region_seconds]
            params["mask_end"] = [e for _, e in request.region_seconds]
            params["splice"] = request.splice or request.chained
        return params
