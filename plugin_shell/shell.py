"""The plugin shell: DAW intentions (loop, inpaint, extend, variation) in, new clips out.

The shell does all musical and sample-exact bookkeeping at the host rate and talks to a generation
backend (`plugin_shell.backends`) with audio at the model rate, 44.1 kHz. Prompts come from a
`daw_presets` prompt template; files, names and placement follow a `daw_presets` DAW preset. Every
result is a new WAV file with a JSON sidecar; source clips and files are never touched.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from bridge.timeline import latent_frames_to_samples, samples_to_latent_frames
from daw_presets import (
    DawPreset,
    PromptTemplate,
    load_preset,
    render_clip_name,
    render_file_name,
    render_prompt,
)
from plugin_shell.backends import Backend
from plugin_shell.dsp import fit, smooth_join, wrap_crossfade
from plugin_shell.host import Clip, HostContext, Selection
from plugin_shell.warp import HANDLE_SECONDS, WarpPlan, plan, tempo_changes_within, warp
from sa3_engine.audio import resample, splice, unique_path, write_json, write_wav

if TYPE_CHECKING:
    from bridge.timeline import TempoMap

DEFAULT_TEMPLATE = "music_loop"
DEFAULT_DAW = "offline"


class Cancelled(Exception):
    """The host asked to stop; nothing was written."""


# -- selection geometry ------------------------------------------------------------------------


def display_bar(tempo_map: TempoMap, sample: int, rate: int) -> float:
    """The bar at `sample` as a DAW's ruler numbers it: from 1 (the timeline API counts from 0)."""
    return float(tempo_map.sample_to_bar(sample, rate)) + 1


def where(tempo_map: TempoMap, sample: int, rate: int) -> str:
    """A timeline position in the user's terms: ``bar 2.5 (3.00 s)``."""
    return f"bar {display_bar(tempo_map, sample, rate):g} ({sample / rate:.2f} s)"



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


def latent_region(start: int, end: int, sample_rate: int, model_rate: int, model_samples: int) -> tuple[float, float]:
    """Host samples [start, end) of the audio sent to the model, as model seconds widened outwards to
    whole latent frames (and cut at the audio's `model_samples`).

    The pipeline regenerates latent frame i iff its first sample, i * 4096 at the model rate, lies in
    the region (the official nearest-frame mask). Sent as they are, a selection shorter than a frame
    can regenerate nothing and one starting inside a frame starts up to a frame (93 ms) late; widened,
    every frame the selection touches is regenerated. The splice back still changes only the selection.
    """
    first = samples_to_latent_frames(start, sample_rate, model_rate=model_rate)
    if latent_frames_to_samples(first, sample_rate, model_rate=model_rate) > start:
        first -= 1  # the frame holding `start` begins before it
    last = samples_to_latent_frames(end, sample_rate, model_rate=model_rate)
    bounds = (min(latent_frames_to_samples(f, model_rate, model_rate=model_rate), model_samples) for f in (first, last))
    return tuple(b / model_rate for b in bounds)


@dataclass(frozen=True)
class Musical:
    """The musical facts of a timeline range, for prompts, file names and sidecars."""

    start_bar: Fraction
    end_bar: Fraction
    bpm: float  # the mean tempo over the range: exactly what fits its bars into its duration
    meter: str
    tempi: tuple[float, float]  # the slowest and fastest tempo in force over the range

    @classmethod
    def between(cls, tempo_map: TempoMap, start_bar: Fraction, end_bar: Fraction) -> Musical:
        q0, q1 = tempo_map.bar_to_quarters(start_bar), tempo_map.bar_to_quarters(end_bar)
        seconds = tempo_map.bar_to_seconds(end_bar) - tempo_map.bar_to_seconds(start_bar)
        meter = str(tempo_map.meter_at(start_bar))
        inside = [float(t.bpm) for t in tempo_map.tempos if q0 < t.quarter < q1]
        tempi = [tempo_map.tempo_at(start_bar), *inside]
        return cls(Fraction(start_bar), Fraction(end_bar), float((q1 - q0) * 60 / seconds), meter,
                   (min(tempi), max(tempi)))

    @classmethod
    def of(cls, host: HostContext, start: int, end: int) -> Musical:
        """The range of samples [start, end) on the host's timeline."""
        to_bar = host.tempo_map.sample_to_bar
        return cls.between(host.tempo_map, to_bar(start, host.sample_rate), to_bar(end, host.sample_rate))

    @classmethod
    def of_selection(cls, host: HostContext, selection: Selection) -> Musical:
        """A selection's range, from its exact bars when the host selected by bars."""
        if selection.bars is None:
            return cls.of(host, selection.start, selection.end)
        return cls.between(host.tempo_map, *selection.bars)

    @property
    def bars(self) -> Fraction:
        return self.end_bar - self.start_bar

    def sidecar(self, warped: bool = False) -> dict:
        """The sidecar's musical facts; `warped`: whether the result was stretched onto the tempo map."""
        changes = self.tempi[0] != self.tempi[1]
        facts = {  # bars as the DAW's ruler numbers them, like file names and song files (docs/architecture.md)
            "start_bar": float(self.start_bar) + 1, "end_bar": float(self.end_bar) + 1,
            "bars": float(self.bars), "tempo_bpm": self.bpm, "meter": self.meter,
            "tempo_min_bpm": self.tempi[0], "tempo_max_bpm": self.tempi[1], "tempo_changes": changes,
            "warped": warped,
        }
        if changes and not warped:
            facts["tempo_note"] = (
                f"the tempo changes inside this range ({self.tempi[0]:g} to {self.tempi[1]:g} bpm): the audio "
                f"was generated at the mean tempo ({self.bpm:.2f} bpm) and is not warped to the tempo map, "
                "so its beats drift from the grid")
        return facts


# -- the shell ---------------------------------------------------------------------------------


@dataclass
class PluginShell:
    """Turns DAW intentions into backend requests and results into new clips on the host.

    `template` is a prompt template preset (name or `PromptTemplate`): the musical facts of the range
    fill its slots and the producer's words its {prompt}; its negative prompt is the default one.
    `daw` is a DAW preset (name or `DawPreset`): result files take its bit depth and file and clip
    names, and the host is asked to follow its placement rule.

    The default DAW preset writes 32-bit float, the one safe choice: an inpaint take is the source's
    own samples outside the selection, and only float stores any source's samples unchanged (24-bit
    PCM holds a 24-bit source's integer samples exactly when the host runs at the file's rate, but
    requantises a float or resampled source); float also keeps generated peaks above full scale
    instead of clipping them.

    `crossfade_seconds` is the equal-power fade at loop wraps and inpaint edges; `context_seconds`
    is how much audio around an inpaint selection (or before an extension) the model hears.

    `warp`: where a loop or an extension crosses a tempo change, generate it at one reference tempo
    and stretch each tempo segment onto the host's grid (`plugin_shell.warp`); the sidecar records it.
    """

    host: HostContext
    backend: Backend
    template: str | PromptTemplate = DEFAULT_TEMPLATE
    daw: str | DawPreset = DEFAULT_DAW
    steps: int | None = None
    cfg_scale: float | None = None
    crossfade_seconds: float = 0.03
    context_seconds: float = 10.0
    warp: bool = True

    def __post_init__(self) -> None:
        # names are loaded once here, so a bad one fails before any generation
        self.template = _preset("prompt", self.template, PromptTemplate, "template")
        self.daw = _preset("daw", self.daw, DawPreset, "daw")

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
            selection = self._selection()
            start_bar = selection.bars[0] if selection.bars else tempo_map.sample_to_bar(selection.start, rate)
        end_bar = Fraction(start_bar) + bars
        start, end = tempo_map.bar_range_to_samples(start_bar, end_bar, rate)
        musical = Musical.between(tempo_map, start_bar, end_bar)
        # at the mean tempo, in whole bpm as the prompt names it (the model plays what the prompt says)
        warping = self._warp_plan(start, end, Fraction(math.floor(musical.bpm + 0.5)))
        length = end - start if warping is None else warping.source_length
        overflow = max(round(length / bars), self._crossfade())
        text, negative = self._prompts(prompt, musical, key, negative_prompt)
        made = self.backend.generate(text, seconds=(length + overflow) / rate, **self._options(negative, seed))
        loop = wrap_crossfade(self._to_host(made.audio, length + overflow), length, self._crossfade())
        if warping is not None:
            loop = self._warp_loop(loop, start, end, warping)
        return self._place(track, loop, start, op="loop", prompt=text, words=prompt, negative_prompt=negative, musical=musical,
                           meta=made.metadata, key=key, warping=warping)

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
                f"selection: {self._where(selection.start)} to {self._where(selection.end)} is not inside the clip "
                f"{clip.path.name}, {self._where(clip.start)} to {self._where(clip.start + source.shape[1])}"
            )
        w0, w1 = context_window(start, end, source.shape[1], self._max_length(), self._samples(self.context_seconds))
        musical = Musical.of_selection(self.host, selection)
        text, negative = self._prompts(prompt, musical, key, negative_prompt)
        context = self._to_model(source[:, w0:w1])
        region = latent_region(start - w0, end - w0, self.host.sample_rate, self.backend.sample_rate, context.shape[1])
        made = self.backend.inpaint(
            context, start=region[0], end=region[1], prompt=text, **self._options(negative, seed)
        )
        generated = np.zeros_like(source)
        generated[:, w0:w1] = self._to_host(made.audio, w1 - w0)
        take = splice(source, generated, [(start, end)], self._crossfade())
        return self._place(track, take, clip.start, op="inpaint", prompt=text, words=prompt, negative_prompt=negative,
                           musical=musical, meta=made.metadata, key=key, source=clip, take_of=clip)

    def extend(
        self, track: str, clip: Clip, *, prompt: str = "", key: str = "", negative_prompt: str | None = None,
        seed: int = -1,
    ) -> Clip:
        """Continue `clip` up to the song end; the continuation is a new clip right after it."""
        source = self._source(track, clip)
        clip_end, song_end = clip.start + source.shape[1], self.host.song_end
        if song_end <= clip_end:
            raise ValueError(f"the song ends at {self._where(song_end)}, not after the clip's end at "
                             f"{self._where(clip_end)}; nothing to extend")
        heard = min(source.shape[1], self._samples(self.context_seconds), self._max_length() // 2)
        musical = Musical.of(self.host, clip_end, song_end)
        # played on at the tempo the clip ends in, the model's tempo matches what it hears
        ending = Fraction(self.host.tempo_map.tempo_at(self.host.tempo_map.sample_to_bar(clip_end - 1, self.host.sample_rate)))
        warping = self._warp_plan(clip_end, song_end, ending)
        if warping is not None:
            musical = replace(musical, bpm=float(ending))
        new = song_end - clip_end if warping is None else warping.source_length + self._samples(HANDLE_SECONDS)
        text, negative = self._prompts(prompt, musical, key, negative_prompt)
        context = self._to_model(source[:, -heard:])
        new_model = -(-new * self.backend.sample_rate // self.host.sample_rate) + 1  # covers every host sample
        made = self.backend.extend(
            context, seconds=new_model / self.backend.sample_rate, prompt=text, **self._options(negative, seed)
        )
        # the heard context is resampled along with the continuation, so the join has no filter edge
        continuation = self._to_host(made.audio, heard + new)
        continuation = continuation[:, heard:] if warping is None else warp(continuation, self.host.sample_rate, warping,
                                                                            offset=heard)
        continued = smooth_join(source, continuation, self._crossfade())
        return self._place(track, continued, clip_end, op="extend", prompt=text, words=prompt, negative_prompt=negative,
                           musical=musical, meta=made.metadata, key=key, source=clip, warping=warping)

    def variation(
        self, track: str, clip: Clip, *, prompt: str = "", init_noise_level: float = 0.7, key: str = "",
        negative_prompt: str | None = None, seed: int = -1,
    ) -> Clip:
        """An audio-to-audio variation of the whole clip, as a new take of the same length."""
        if not 0.0 < init_noise_level <= 1.0:
            raise ValueError(f"init_noise_level: expected 0 < init_noise_level <= 1, got {init_noise_level}")
        source = self._source(track, clip)
        if source.shape[1] > self._max_length():
            raise ValueError(f"clip: {source.shape[1]} samples is longer than the model's maximum of "
                             f"{self._max_length()} for a variation")
        musical = Musical.of(self.host, clip.start, clip.start + source.shape[1])
        text, negative = self._prompts(prompt, musical, key, negative_prompt)
        made = self.backend.variation(
            self._to_model(source), init_noise_level=init_noise_level, prompt=text, **self._options(negative, seed)
        )
        return self._place(track, self._to_host(made.audio, source.shape[1]), clip.start, op="variation", prompt=text, words=prompt,
                           negative_prompt=negative, musical=musical, meta={**made.metadata, "init_noise_level": init_noise_level}, key=key,
                           source=clip, take_of=clip)

    # -- plumbing ----------------------------------------------------------------------------

    def _selection(self) -> Selection:
        if self.host.selection is None:
            raise ValueError("selection: the host has no selection; select a range or pass one")
        return self.host.selection

    def _source(self, track: str, clip: Clip) -> np.ndarray:
        if not any(c is clip for c in self.host.track(track).clips):
            raise ValueError(f"clip: {clip.path.name} is not on track {track!r}")
        return self.host.read_clip(clip)

    def _where(self, sample: int) -> str:
        return where(self.host.tempo_map, sample, self.host.sample_rate)

    def _samples(self, seconds: float) -> int:
        return round(seconds * self.host.sample_rate)

    def _crossfade(self) -> int:
        return max(1, self._samples(self.crossfade_seconds))

    def _max_length(self) -> int:
        """The most host samples that still fit the model's maximum once converted to its rate (`resample`
        makes n host samples round(n * model_rate / host_rate) model samples)."""
        model_rate, rate = self.backend.sample_rate, self.host.sample_rate
        model_max = math.floor(self.backend.max_seconds * model_rate + 1e-6)  # seconds may not be exact
        n = math.floor((model_max + Fraction(1, 2)) * rate / model_rate)
        while round(Fraction(n * model_rate, rate)) > model_max:  # round half to even, as `resample`
            n -= 1
        return n

    def _to_model(self, audio: np.ndarray) -> np.ndarray:
        return resample(np.ascontiguousarray(audio), self.host.sample_rate, self.backend.sample_rate)

    def _to_host(self, audio: np.ndarray, length: int) -> np.ndarray:
        return fit(resample(audio, self.backend.sample_rate, self.host.sample_rate), length)

    def _warp_plan(self, start: int, end: int, reference_bpm: Fraction) -> WarpPlan | None:
        """How to warp host samples [start, end) from `reference_bpm`, or None: warp is off, or the tempo
        does not change inside the range."""
        rate, tempo_map = self.host.sample_rate, self.host.tempo_map
        if not self.warp or not tempo_changes_within(tempo_map, rate, start, end):
            return None
        return plan(tempo_map, rate, start, end, reference_bpm)

    def _warp_loop(self, loop: np.ndarray, start: int, end: int, warping: WarpPlan) -> np.ndarray:
        """A reference-tempo loop warped onto samples [start, end), still seamless.

        The loop repeats on both sides as handles, and the warp runs a crossfade past the end, which
        is wrapped into the head again: pieces stretched apart do not meet sample to sample."""
        rate, crossfade = self.host.sample_rate, self._crossfade()
        handle = min(loop.shape[1], self._samples(1.0))
        repeated = np.concatenate([loop[:, -handle:], loop, loop[:, : handle + crossfade]], axis=1)
        longer = plan(self.host.tempo_map, rate, start, end + crossfade, warping.reference_bpm)
        return wrap_crossfade(warp(repeated, rate, longer, offset=handle), end - start, crossfade)

    def _prompts(self, prompt: str, musical: Musical, key: str, negative: str | None) -> tuple[str, str | None]:
        """(prompt, negative prompt): the template filled in, and the caller's negative or the template's."""
        text = render_prompt(
            self.template, prompt=prompt, bpm=musical.bpm, meter=musical.meter, key=key, bars=musical.bars
        )
        return text, negative if negative is not None else self.template.negative or None

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
        self, track: str, audio: np.ndarray, start: int, *, op: str, prompt: str, words: str,
        negative_prompt: str | None, musical: Musical, meta: dict, key: str, source: Clip | None = None,
        take_of: Clip | None = None, warping: WarpPlan | None = None,
    ) -> Clip:
        """Write `audio` as a new file named by the DAW preset plus a sidecar, then place it on the host.

        Names show the producer's `words` (the prompt without the template's tags), when there are any.
        """
        rate, daw = self.host.sample_rate, self.daw
        slots = {
            "project": self.host.project, "track": track, "op": op, "prompt": words.strip() or prompt,
            "seed": meta.get("seed"),
            "bar": musical.start_bar + 1, "bar_end": musical.end_bar + 1,  # as the sidecar: from 1, end = stop
            "take": 1 + sum(c.start == start for c in self.host.track(track).clips),
            "timestamp": time.strftime("%Y%m%dT%H%M%S"),
        }
        folder = Path(self.host.media_dir)
        folder.mkdir(parents=True, exist_ok=True)
        path = unique_path(folder / f"{render_file_name(daw, **slots)}.wav", sidecars=(".json",))
        write_wav(path, audio, rate, bit_depth=daw.wav_format)
        write_json(path.with_suffix(".json"), {
            "op": op, "prompt": prompt, "words": words, "negative_prompt": negative_prompt, "key": key,
            "seed": slots["seed"],
            "template": self.template.name, "daw": daw.name, "placement": daw.placement,
            "model": self.backend.model_id, "sample_rate": rate, "start_sample": start, "length": audio.shape[1],
            **musical.sidecar(warped=warping is not None),
            "source": None if source is None else {"path": str(source.path), "sha256": _sha256(source.path)},
            "backend": meta,
            "warp": warping.sidecar() if warping is not None else {"applied": False},
        })
        name = render_clip_name(daw, **slots)
        # a take keeps its source's gain and fades, so switching takes changes only the audio
        clip = Clip(path, start, name=name) if take_of is None else replace(take_of, path=path, muted=False, name=name)
        return self.host.place_clip(track, clip, take_of=take_of, placement=daw.placement)


def _preset(kind: str, value, cls: type, field: str):
    """A preset given by name, or as its loaded object."""
    if isinstance(value, cls):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{field}: expected a {kind} preset name or {cls.__name__}, got {value!r}")
    try:
        return load_preset(kind, value)
    except ValueError as error:
        raise ValueError(f"{field}: {error}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
