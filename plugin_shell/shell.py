"""The plugin shell: DAW intentions (loop, inpaint, extend, variation) in, new clips out.

The shell does all musical and sample-exact bookkeeping at the host rate and talks to a generation
backend through the narrow `Backend` protocol (audio in and out at the model rate, 44.1 kHz).
Every result is a new float32 WAV file with a JSON sidecar; source clips and files are never touched.
"""

from __future__ import annotations

import hashlib
import re
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from plugin_shell.host import Clip, HostContext, Selection
from sa3_engine.audio import equal_power_fade, resample, splice, unique_path, write_json, write_wav

if TYPE_CHECKING:
    from bridge.timeline import TempoMap

Progress = Callable[[dict], None]

DEFAULT_TEMPLATE = "{prompt}, {bpm} BPM, {meter} time, {key}"


class Cancelled(Exception):
    """The host asked to stop; nothing was written."""


class Backend(Protocol):
    """What the shell needs from a generator. Audio is float32 (2, samples) at `sample_rate`.

    Every call returns (audio, metadata): metadata is JSON-serialisable and holds at least the seed
    used. `progress` receives {"stage", "i", "n"} events; an exception raised inside it aborts the call.
    """

    @property
    def model_id(self) -> str: ...

    @property
    def sample_rate(self) -> int: ...

    @property
    def max_seconds(self) -> float: ...

    def generate(
        self, prompt: str, *, seconds: float, negative_prompt: str | None = None, seed: int = -1,
        steps: int | None = None, cfg_scale: float | None = None, progress: Progress | None = None,
    ) -> tuple[np.ndarray, dict]:
        """`seconds` of new audio."""

    def inpaint(
        self, audio: np.ndarray, *, start: float, end: float, prompt: str, negative_prompt: str | None = None,
        seed: int = -1, steps: int | None = None, cfg_scale: float | None = None, progress: Progress | None = None,
    ) -> tuple[np.ndarray, dict]:
        """`audio` with seconds [start, end) regenerated; same length."""

    def extend(
        self, audio: np.ndarray, *, seconds: float, prompt: str, negative_prompt: str | None = None,
        seed: int = -1, steps: int | None = None, cfg_scale: float | None = None, progress: Progress | None = None,
    ) -> tuple[np.ndarray, dict]:
        """`audio` followed by `seconds` of continuation (any length: long ones are chained windows)."""

    def variation(
        self, audio: np.ndarray, *, strength: float, prompt: str, negative_prompt: str | None = None,
        seed: int = -1, steps: int | None = None, cfg_scale: float | None = None, progress: Progress | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Audio-to-audio: `strength` is the init noise level (0 keeps the input, 1 ignores it)."""


class PipelineBackend:
    """The backend as an in-process `sa3_engine.pipeline.Pipeline` (scripts and tests)."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.model_id = pipeline.model_id
        self.sample_rate = pipeline.sample_rate
        self.max_seconds = pipeline.max_seconds

    def generate(self, prompt, *, seconds, **options):
        return self._run(prompt, duration=seconds, **options)

    def inpaint(self, audio, *, start, end, prompt, **options):
        return self._run(
            prompt, duration=audio.shape[1] / self.sample_rate, inpaint_audio=(self.sample_rate, audio),
            inpaint_mask_start_seconds=start, inpaint_mask_end_seconds=end, **options,
        )

    def extend(self, audio, *, seconds, prompt, **options):
        source_seconds = audio.shape[1] / self.sample_rate
        return self._run(
            prompt, duration=source_seconds + seconds, inpaint_audio=(self.sample_rate, audio),
            inpaint_mask_start_seconds=source_seconds, inpaint_mask_end_seconds=source_seconds + seconds,
            **options,
        )

    def variation(self, audio, *, strength, prompt, **options):
        return self._run(
            prompt, duration=audio.shape[1] / self.sample_rate, init_audio=(self.sample_rate, audio),
            init_noise_level=strength, **options,
        )

    def _run(self, prompt, *, progress=None, **kwargs):
        generation = self.pipeline.generate(prompt, callback=progress, **kwargs)[0]
        return generation.audio, {**generation.params, "seed": generation.seed, "timings": generation.timings}


class EngineBackend:
    """The backend as a running engine, through `bridge.client.EngineClient` (the product path).

    An exception raised by `progress` also cancels the request on the engine before it propagates.
    """

    def __init__(self, client, model: str, *, load_timeout: float = 600.0) -> None:
        self.client, self.model = client, model
        loaded = client.load(model, timeout=load_timeout)["models"]
        info = next(m for m in loaded if m["model"] == model)
        self.model_id = info["model_id"]
        self.sample_rate = info["sample_rate"]
        self.max_seconds = info["max_seconds"]

    def generate(self, prompt, *, seconds, **options):
        return self._run(self.client.generate, prompt, duration=seconds, **options)

    def inpaint(self, audio, *, start, end, prompt, **options):
        return self._run(self.client.inpaint, audio, start, end, prompt, sample_rate=self.sample_rate, **options)

    def extend(self, audio, *, seconds, prompt, **options):
        total = audio.shape[1] / self.sample_rate + seconds
        return self._run(self.client.extend, audio, total, prompt, sample_rate=self.sample_rate, **options)

    def variation(self, audio, *, strength, prompt, **options):
        return self._run(
            self.client.variation, audio, prompt, sample_rate=self.sample_rate, init_noise_level=strength, **options
        )

    def _run(self, call, *args, progress=None, **options):
        request_id = uuid.uuid4().hex
        stopping = False

        def on_event(event: dict) -> None:
            nonlocal stopping
            if progress is None or stopping or event.get("event") != "progress":
                return
            try:
                progress({k: event[k] for k in ("stage", "i", "n")})
            except BaseException:
                stopping = True  # events that arrive while the cancel is on its way are dropped
                self.client.cancel(request_id)
                raise

        result = call(*args, model=self.model, request_id=request_id, on_progress=on_event, **options)[0]
        return result.audio, {**result.params, "seed": result.seed, "timings": result.timings}


# -- pure helpers ------------------------------------------------------------------------------


def fill_prompt(template: str, **fields) -> str:
    """Fill a comma-separated prompt template; a part whose fields are all empty is dropped.

    "{prompt}, {bpm} BPM, {key}" with key="" gives "warm pads, 120 BPM".
    """
    parts = []
    for part in template.split(","):
        names = [name for _, name, _, _ in string.Formatter().parse(part) if name is not None]
        for name in names:
            if name not in fields:
                raise ValueError(f"prompt template: unknown field {{{name}}} (known: {', '.join(sorted(fields))})")
        if names and all(fields[name] in ("", None) for name in names):
            continue
        text = part.format_map(fields).strip()
        if text:
            parts.append(text)
    return ", ".join(parts)


def seam_discontinuity(loop: np.ndarray, window: int = 512) -> float:
    """How much the wrap from a loop's last sample to its first stands out.

    The jump across the wrap divided by the mean absolute sample-to-sample difference over the
    `window` samples on each side of it (the worst channel). A continuous wrap scores about 1
    (pi/2 for a sine through zero); a click scores many times more. Silence with no jump is 0.
    """
    if loop.ndim != 2 or loop.shape[1] < 4:
        raise ValueError(f"loop: expected (channels, samples) with at least 4 samples, got {loop.shape}")
    window = max(2, min(window, loop.shape[1] // 2))
    jump = np.abs(loop[:, 0].astype(np.float64) - loop[:, -1])
    steps = np.concatenate([np.diff(loop[:, -window:], axis=1), np.diff(loop[:, :window], axis=1)], axis=1)
    typical = np.abs(steps.astype(np.float64)).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(jump == 0, 0.0, jump / typical)
    return float(ratio.max())


def wrap_crossfade(audio: np.ndarray, length: int, crossfade: int) -> np.ndarray:
    """A seamless loop of exactly `length` samples from audio generated past the loop end.

    The overflow just past `length` is what naturally follows the loop's last sample, so it is
    crossfaded (equal power) into the head: the wrap then continues as the audio did, and the head
    returns to its own material within `crossfade` samples. The length never changes.
    """
    if audio.shape[1] < length + crossfade:
        raise ValueError(f"audio: need {length + crossfade} samples for the wrap crossfade, got {audio.shape[1]}")
    loop = audio[:, :length].copy()
    fade_in, fade_out = equal_power_fade(crossfade)
    loop[:, :crossfade] = audio[:, length : length + crossfade] * fade_out + loop[:, :crossfade] * fade_in
    return loop


def smooth_join(before: np.ndarray, after: np.ndarray, length: int) -> np.ndarray:
    """`after` adjusted to leave off where `before` ends, for clips placed back to back.

    The step from `before`'s last sample (extrapolated along its last slope) to `after`'s first is
    removed by an offset that fades out over `length` samples (a raised-cosine half). A model's
    continuation is generated against its own reconstruction of the source, so its first sample can
    jump away from the untouched source; nothing past `length` changes.
    """
    slope = before[:, -1] - before[:, -2] if before.shape[1] > 1 else 0.0
    step = before[:, -1] + slope - after[:, 0]
    n = min(length, after.shape[1])
    fade = 0.5 * (1.0 + np.cos(np.pi * np.arange(n) / n))
    out = after.copy()
    out[:, :n] += (step[:, None] * fade).astype(out.dtype)
    return out


def context_window(start: int, end: int, total: int, max_length: int, context: int) -> tuple[int, int]:
    """The window [w0, w1) of a [0, total) clip sent with an inpaint of [start, end).

    Up to `context` samples each side, `max_length` at most in all, centred on the selection and
    shifted inwards where it meets a clip edge.
    """
    if end - start > max_length:
        raise ValueError(f"selection: {end - start} samples is longer than the model's maximum of {max_length}")
    size = min(total, max_length, end - start + 2 * context)
    w0 = min(max(start - (size - (end - start)) // 2, 0), total - size)
    return w0, w0 + size


def fit(audio: np.ndarray, length: int) -> np.ndarray:
    """Pad with silence or trim to exactly `length` samples (resampling can be a sample off)."""
    if audio.shape[1] >= length:
        return audio[:, :length]
    return np.pad(audio, ((0, 0), (0, length - audio.shape[1])))


@dataclass(frozen=True)
class Musical:
    """The musical facts of a timeline range, for prompts and sidecars."""

    start_bar: Fraction
    end_bar: Fraction
    bpm: float  # the mean tempo over the range: exactly what fits its bars into its duration
    meter: str

    @classmethod
    def between(cls, tempo_map: TempoMap, start_bar: Fraction, end_bar: Fraction) -> Musical:
        quarters = tempo_map.bar_to_quarters(end_bar) - tempo_map.bar_to_quarters(start_bar)
        seconds = tempo_map.bar_to_seconds(end_bar) - tempo_map.bar_to_seconds(start_bar)
        meter = str(tempo_map.meter_at(start_bar))
        return cls(Fraction(start_bar), Fraction(end_bar), float(quarters * 60 / seconds), meter)

    @classmethod
    def of(cls, host: HostContext, start: int, end: int) -> Musical:
        """The range of samples [start, end) on the host's timeline."""
        to_bar = host.tempo_map.sample_to_bar
        return cls.between(host.tempo_map, to_bar(start, host.sample_rate), to_bar(end, host.sample_rate))

    def sidecar(self) -> dict:
        return {
            "start_bar": float(self.start_bar), "end_bar": float(self.end_bar),
            "bars": float(self.end_bar - self.start_bar), "tempo_bpm": self.bpm, "meter": self.meter,
        }


# -- the shell ---------------------------------------------------------------------------------


@dataclass
class PluginShell:
    """Turns DAW intentions into backend requests and results into new clips on the host.

    `crossfade_seconds` is the equal-power fade at loop wraps and inpaint edges; `context_seconds`
    is how much audio around an inpaint selection (or before an extension) the model hears.
    """

    host: HostContext
    backend: Backend
    template: str = DEFAULT_TEMPLATE
    steps: int | None = None
    cfg_scale: float | None = None
    crossfade_seconds: float = 0.03
    context_seconds: float = 10.0

    def generate_loop(
        self, track: str, *, bars: int, prompt: str = "", start_bar: float | None = None, key: str = "",
        negative_prompt: str | None = None, seed: int = -1,
    ) -> Clip:
        """A seamless loop of exactly `bars` bars at the host tempo and meter, placed at `start_bar`
        (default: the bar at the selection start).

        One bar more than needed is generated, so the model plays on through the loop end instead of
        composing an ending, and that overflow is crossfaded into the head (`wrap_crossfade`). Why this
        rather than inpainting across a rotated seam: it costs one generation, not two; the sample after
        the wrap is the one the model itself played next; and the overflow starts on the downbeat after
        the loop, so the crossfade blends two downbeats that fall together.
        """
        if isinstance(bars, bool) or not isinstance(bars, int) or bars < 1:
            raise ValueError(f"bars: expected a whole number >= 1, got {bars!r}")
        self.host.track(track)  # an unknown track fails before the generation, not after
        rate, tempo_map = self.host.sample_rate, self.host.tempo_map
        if start_bar is None:
            start_bar = tempo_map.sample_to_bar(self._selection().start, rate)
        end_bar = Fraction(start_bar) + bars
        start, end = tempo_map.bar_range_to_samples(start_bar, end_bar, rate)
        musical = Musical.between(tempo_map, start_bar, end_bar)
        length = end - start
        overflow = max(round(length / bars), self._crossfade())
        text = self._prompt(prompt, musical, key)
        audio, meta = self.backend.generate(
            text, seconds=(length + overflow) / rate, **self._options(negative_prompt, seed)
        )
        loop = wrap_crossfade(self._to_host(audio, length + overflow), length, self._crossfade())
        return self._place(
            track, loop, start, op="loop", prompt=text, musical=musical, meta=meta, key=key,
            negative_prompt=negative_prompt,
        )

    def inpaint(
        self, track: str, clip: Clip, *, prompt: str = "", selection: Selection | None = None, key: str = "",
        negative_prompt: str | None = None, seed: int = -1,
    ) -> Clip:
        """Regenerate the selection (default: the host's) inside `clip`; the result is a new take of the
        whole clip that is bit-identical to the source outside the selection."""
        selection = selection or self._selection()
        source = self._source(track, clip)
        start, end = selection.start - clip.start, selection.end - clip.start
        if start < 0 or end > source.shape[1]:
            raise ValueError(
                f"selection: {selection.start}..{selection.end} is not inside the clip "
                f"({clip.start}..{clip.start + source.shape[1]})"
            )
        w0, w1 = context_window(start, end, source.shape[1], self._max_length(), self._samples(self.context_seconds))
        rate = self.host.sample_rate
        musical = Musical.of(self.host, selection.start, selection.end)
        text = self._prompt(prompt, musical, key)
        audio, meta = self.backend.inpaint(
            self._to_model(source[:, w0:w1]), start=(start - w0) / rate, end=(end - w0) / rate, prompt=text,
            **self._options(negative_prompt, seed),
        )
        generated = np.zeros_like(source)
        generated[:, w0:w1] = self._to_host(audio, w1 - w0)
        take = splice(source, generated, [(start, end)], self._crossfade())
        return self._place(
            track, take, clip.start, op="inpaint", prompt=text, musical=musical, meta=meta, key=key,
            negative_prompt=negative_prompt, source=clip, take_of=clip,
        )

    def extend(
        self, track: str, clip: Clip, *, prompt: str = "", key: str = "", negative_prompt: str | None = None,
        seed: int = -1,
    ) -> Clip:
        """Continue `clip` up to the song end; the continuation is a new clip right after it."""
        source = self._source(track, clip)
        clip_end, song_end = clip.start + source.shape[1], self.host.song_end
        if song_end <= clip_end:
            raise ValueError(f"song_end: {song_end} is not after the clip end ({clip_end}); nothing to extend")
        new = song_end - clip_end
        heard = min(source.shape[1], self._samples(self.context_seconds), self._max_length() // 2)
        musical = Musical.of(self.host, clip_end, song_end)
        text = self._prompt(prompt, musical, key)
        context = self._to_model(source[:, -heard:])
        new_model = -(-new * self.backend.sample_rate // self.host.sample_rate) + 1  # covers every host sample
        audio, meta = self.backend.extend(
            context, seconds=new_model / self.backend.sample_rate, prompt=text, **self._options(negative_prompt, seed)
        )
        # the heard context is resampled along with the continuation, so the join has no filter edge
        continued = smooth_join(source, self._to_host(audio, heard + new)[:, heard:], self._crossfade())
        return self._place(
            track, continued, clip_end, op="extend", prompt=text, musical=musical, meta=meta, key=key,
            negative_prompt=negative_prompt, source=clip,
        )

    def variation(
        self, track: str, clip: Clip, *, prompt: str = "", strength: float = 0.7, key: str = "",
        negative_prompt: str | None = None, seed: int = -1,
    ) -> Clip:
        """An audio-to-audio variation of the whole clip, as a new take of the same length."""
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength: expected 0 < strength <= 1, got {strength}")
        source = self._source(track, clip)
        if source.shape[1] > self._max_length():
            raise ValueError(f"clip: {source.shape[1]} samples is longer than the model's maximum of "
                             f"{self._max_length()} for a variation")
        musical = Musical.of(self.host, clip.start, clip.start + source.shape[1])
        text = self._prompt(prompt, musical, key)
        audio, meta = self.backend.variation(
            self._to_model(source), strength=strength, prompt=text, **self._options(negative_prompt, seed)
        )
        return self._place(
            track, self._to_host(audio, source.shape[1]), clip.start, op="variation", prompt=text,
            musical=musical, meta={**meta, "strength": strength}, key=key, negative_prompt=negative_prompt,
            source=clip, take_of=clip,
        )

    # -- plumbing ----------------------------------------------------------------------------

    def _selection(self) -> Selection:
        if self.host.selection is None:
            raise ValueError("selection: the host has no selection; select a range or pass one")
        return self.host.selection

    def _source(self, track: str, clip: Clip) -> np.ndarray:
        if not any(c is clip for c in self.host.track(track).clips):
            raise ValueError(f"clip: {clip.path.name} is not on track {track!r}")
        return self.host.read_clip(clip)

    def _samples(self, seconds: float) -> int:
        return round(seconds * self.host.sample_rate)

    def _crossfade(self) -> int:
        return max(1, self._samples(self.crossfade_seconds))

    def _max_length(self) -> int:
        """The most host samples that still fit the model's maximum once converted to its rate."""
        model_max = int(self.backend.max_seconds * self.backend.sample_rate)
        return int((model_max - 0.5) * self.host.sample_rate / self.backend.sample_rate)

    def _to_model(self, audio: np.ndarray) -> np.ndarray:
        return resample(np.ascontiguousarray(audio), self.host.sample_rate, self.backend.sample_rate)

    def _to_host(self, audio: np.ndarray, length: int) -> np.ndarray:
        return fit(resample(audio, self.backend.sample_rate, self.host.sample_rate), length)

    def _prompt(self, prompt: str, musical: Musical, key: str) -> str:
        return fill_prompt(
            self.template, prompt=prompt, bpm=round(musical.bpm), meter=musical.meter, key=key,
            bars=f"{float(musical.end_bar - musical.start_bar):g}",
        )

    def _options(self, negative_prompt: str | None, seed: int) -> dict:
        return {
            "negative_prompt": negative_prompt, "seed": seed, "steps": self.steps, "cfg_scale": self.cfg_scale,
            "progress": self._progress,
        }

    def _progress(self, event: dict) -> None:
        if self.host.cancelled():
            raise Cancelled("cancelled by the host")
        self.host.progress(event)

    def _place(
        self, track: str, audio: np.ndarray, start: int, *, op: str, prompt: str, musical: Musical, meta: dict,
        key: str, negative_prompt: str | None, source: Clip | None = None, take_of: Clip | None = None,
    ) -> Clip:
        """Write `audio` as a new unique file plus sidecar, then place it on the host."""
        rate = self.host.sample_rate
        seed = meta.get("seed")
        bars = f"bar{float(musical.start_bar) + 1:g}-{float(musical.end_bar) + 1:g}"
        folder = Path(self.host.media_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = unique_path(folder / f"{_slug(track)}_{op}_{bars}_seed{seed}.wav")
        write_wav(path, audio, rate, bit_depth="float")
        write_json(path.with_suffix(".json"), {
            "op": op, "prompt": prompt, "negative_prompt": negative_prompt, "key": key, "seed": seed,
            "model": self.backend.model_id, "sample_rate": rate, "start_sample": start, "length": audio.shape[1],
            **musical.sidecar(),
            "source": None if source is None else {"path": str(source.path), "sha256": _sha256(source.path)},
            "backend": meta,
        })
        name = f"{op} {prompt}"[:64]
        # a take keeps its source's gain and fades, so switching takes changes only the audio
        placed = Clip(path, start, name=name) if take_of is None else replace(take_of, path=path, muted=False, name=name)
        self.host.place_clip(track, placed, take_of=take_of)
        return placed


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "track"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
