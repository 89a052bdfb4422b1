"""Tempo maps: bars/beats/ticks <-> seconds <-> samples <-> latent frames, exactly.

Conventions (the ones Ableton Live, REAPER and MIDI use):

- Tempo is in quarter notes per minute, whatever the meter.
- A beat follows the meter's denominator: 6/8 has six eighth-note beats per bar, and a bar of
  n/d lasts n * 4/d quarter notes (6/8 -> 3, 7/8 -> 3.5).
- Bar positions for maths are 0-based and may be fractional (bar 0.5 = halfway through the first
  bar). `BarBeatTick` is the 1-based display form (bar 1, beat 1, tick 0 = the start).
- Every position is kept as an exact `Fraction` of quarter notes; floats from callers are converted
  exactly, so no conversion drifts. Sample positions are rounded once (half up) from absolute time,
  so adjacent ranges always tile.
- A meter change starts a new bar. In a MIDI file a meter change may arrive mid-bar: the running
  bar is then cut short (a partial bar), as DAWs do on import.
"""

from __future__ import annotations

import math
import numbers
import os
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import pairwise

import mido

Number = int | float | Fraction

MODEL_SAMPLE_RATE = 44100
LATENT_FRAME_SAMPLES = 4096
DEFAULT_TICKS_PER_BEAT = 960
MIDI_DEFAULT_TEMPO_US = 500_000  # 120 bpm, the MIDI default when a file has no set_tempo


def _exact(value: Number, name: str) -> Fraction:
    """A real number as an exact Fraction; refuses NaN, infinities and non-numbers."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if isinstance(value, numbers.Rational):
        return Fraction(value.numerator, value.denominator)
    as_float = float(value)
    if not math.isfinite(as_float):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return Fraction(as_float)


def _position(value: Number, name: str) -> Fraction:
    exact = _exact(value, name)
    if exact < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return exact


def _sample_rate(value: Number) -> Fraction:
    rate = _exact(value, "sample_rate")
    if rate <= 0:
        raise ValueError(f"sample_rate must be > 0, got {value!r}")
    return rate


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    return int(value)


def _positive_int(value: int, name: str) -> int:
    if _count(value, name) < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _round_half_up(value: Fraction) -> int:
    return math.floor(value + Fraction(1, 2))


@dataclass(frozen=True)
class Meter:
    """A time signature; `denominator` is the note value of one beat (a power of two)."""

    numerator: int
    denominator: int

    def __post_init__(self) -> None:
        for name in ("numerator", "denominator"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"meter {name} must be a positive integer, got {value!r}")
        if self.denominator & (self.denominator - 1):
            raise ValueError(
                f"meter denominator must be a power of two (1, 2, 4, 8, ...), got {self.denominator}"
            )

    @classmethod
    def parse(cls, text: str) -> Meter:
        """'6/8' -> Meter(6, 8)."""
        parts = text.split("/")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"meter must look like '4/4' or '6/8', got {text!r}")
        return cls(int(parts[0]), int(parts[1]))

    @property
    def beat_quarters(self) -> Fraction:
        return Fraction(4, self.denominator)

    @property
    def bar_quarters(self) -> Fraction:
        return self.numerator * self.beat_quarters

    def __str__(self) -> str:
        return f"{self.numerator}/{self.denominator}"


@dataclass(frozen=True)
class TempoChange:
    """From `quarter` (quarter notes from the start) on, the tempo is `bpm` quarter notes per minute.

    Ints, floats and Fractions are accepted and stored as exact Fractions.
    """

    quarter: Fraction
    bpm: Fraction

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarter", _position(self.quarter, "tempo change position"))
        bpm = _exact(self.bpm, "bpm")
        if bpm <= 0:
            raise ValueError(f"bpm must be > 0, got {self.bpm!r}")
        object.__setattr__(self, "bpm", bpm)


@dataclass(frozen=True)
class MeterChange:
    """From `quarter` on, bars follow `meter`; a new bar always starts here."""

    quarter: Fraction
    meter: Meter

    def __post_init__(self) -> None:
        object.__setattr__(self, "quarter", _position(self.quarter, "meter change position"))
        if not isinstance(self.meter, Meter):
            raise TypeError(f"meter must be a Meter, got {self.meter!r}")


@dataclass(frozen=True)
class BarBeatTick:
    """A DAW-style display position: `bar` and `beat` count from 1, `tick` from 0.

    Ticks subdivide the meter's beat (an eighth note in 6/8), not the quarter note.
    """

    bar: int
    beat: int
    tick: int = 0

    def __str__(self) -> str:
        return f"{self.bar}:{self.beat}:{self.tick}"


def _increasing(positions: Sequence[Fraction], what: str) -> None:
    if not positions or positions[0] != 0:
        raise ValueError(f"the first {what} must be at position 0")
    for before, after in pairwise(positions):
        if after <= before:
            raise ValueError(
                f"{what}s must be in strictly increasing order, got {float(after)} after {float(before)}"
            )


@dataclass(frozen=True)
class TempoMap:
    """Piecewise-constant tempo plus meter changes. Build with `constant`, `from_lists` or `from_midi`."""

    tempos: tuple[TempoChange, ...]
    meters: tuple[MeterChange, ...]
    # Derived lookup tables, one entry per change: where each starts, in seconds and in bars.
    _tempo_quarters: tuple[Fraction, ...] = field(init=False, repr=False, compare=False)
    _tempo_seconds: tuple[Fraction, ...] = field(init=False, repr=False, compare=False)
    _meter_quarters: tuple[Fraction, ...] = field(init=False, repr=False, compare=False)
    _meter_bars: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tempos", tuple(self.tempos))
        object.__setattr__(self, "meters", tuple(self.meters))
        tempo_quarters = tuple(t.quarter for t in self.tempos)
        meter_quarters = tuple(m.quarter for m in self.meters)
        _increasing(tempo_quarters, "tempo change")
        _increasing(meter_quarters, "meter change")

        seconds = [Fraction(0)]
        for before, after in pairwise(self.tempos):
            seconds.append(seconds[-1] + (after.quarter - before.quarter) * 60 / before.bpm)
        bars = [0]
        for before, after in pairwise(self.meters):
            bars.append(bars[-1] + math.ceil((after.quarter - before.quarter) / before.meter.bar_quarters))

        object.__setattr__(self, "_tempo_quarters", tempo_quarters)
        object.__setattr__(self, "_tempo_seconds", tuple(seconds))
        object.__setattr__(self, "_meter_quarters", meter_quarters)
        object.__setattr__(self, "_meter_bars", tuple(bars))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def constant(cls, bpm: Number, meter: Meter = Meter(4, 4)) -> TempoMap:
        return cls((TempoChange(Fraction(0), bpm),), (MeterChange(Fraction(0), meter),))

    @classmethod
    def from_lists(
        cls,
        tempos: Sequence[tuple[Number, Number]],
        meters: Sequence[tuple[int, int, int]] = ((0, 4, 4),),
    ) -> TempoMap:
        """`tempos`: (quarter-note position, bpm) pairs; `meters`: (0-based bar, numerator, denominator).

        Both lists start at position 0 and increase. Tempo may change anywhere, even mid-bar.
        """
        tempo_changes = tuple(TempoChange(quarter, bpm) for quarter, bpm in tempos)
        meter_changes: list[MeterChange] = []
        previous_bar = 0
        for bar, numerator, denominator in meters:
            bar = _count(bar, "meter change bar")
            if not meter_changes:
                if bar != 0:
                    raise ValueError(f"the first meter change must be at bar 0, got bar {bar}")
                quarter = Fraction(0)
            else:
                if bar <= previous_bar:
                    raise ValueError(
                        f"meter changes must be in increasing bar order, got bar {bar} after {previous_bar}"
                    )
                last = meter_changes[-1]
                quarter = last.quarter + (bar - previous_bar) * last.meter.bar_quarters
            meter_changes.append(MeterChange(quarter, Meter(numerator, denominator)))
            previous_bar = bar
        return cls(tempo_changes, tuple(meter_changes))

    @classmethod
    def from_midi(cls, source: str | os.PathLike | mido.MidiFile) -> TempoMap:
        """The tempo map of a type 0 or 1 MIDI file: set_tempo and time_signature from every track.

        No event at tick 0 means the MIDI defaults, 120 bpm and 4/4. Where several events share a
        tick, the last one (in track order) wins.
        """
        midi = source if isinstance(source, mido.MidiFile) else mido.MidiFile(os.fspath(source))
        if midi.type == 2:
            raise ValueError("type 2 MIDI files hold independent sequences with no shared tempo map")
        events = []
        for track in midi.tracks:
            tick = 0
            for message in track:
                tick += message.time
                if message.type in ("set_tempo", "time_signature"):
                    events.append((tick, message))
        events.sort(key=lambda event: event[0])  # stable: equal ticks keep track order

        bpms = {Fraction(0): Fraction(60_000_000, MIDI_DEFAULT_TEMPO_US)}
        meters = {Fraction(0): Meter(4, 4)}
        for tick, message in events:
            quarter = Fraction(tick, midi.ticks_per_beat)
            if message.type == "set_tempo":
                bpms[quarter] = Fraction(60_000_000, message.tempo)
            else:
                meters[quarter] = Meter(message.numerator, message.denominator)
        return cls(
            tuple(TempoChange(q, bpm) for q, bpm in sorted(bpms.items())),
            tuple(MeterChange(q, meter) for q, meter in sorted(meters.items())),
        )

    # -- bars <-> quarter notes ----------------------------------------------------------------

    def _meter_index(self, bar: Fraction) -> int:
        return bisect_right(self._meter_bars, bar) - 1

    def _segment_end_bar(self, index: int) -> Fraction | None:
        """Where meter segment `index` really ends, in bars; before a cut-short bar this is fractional."""
        if index + 1 == len(self.meters):
            return None
        span = self._meter_quarters[index + 1] - self._meter_quarters[index]
        return self._meter_bars[index] + span / self.meters[index].meter.bar_quarters

    def bar_to_quarters(self, bar: Number) -> Fraction:
        """Quarter notes from the start at 0-based `bar`."""
        bar = _position(bar, "bar")
        index = self._meter_index(bar)
        end = self._segment_end_bar(index)
        if end is not None and bar >= end:
            raise ValueError(
                f"bar {float(bar)} does not exist: bar {self._meter_bars[index + 1] - 1} (0-based) "
                f"is cut short by the meter change at bar {self._meter_bars[index + 1]}"
            )
        change = self.meters[index]
        return change.quarter + (bar - self._meter_bars[index]) * change.meter.bar_quarters

    def quarters_to_bar(self, quarters: Number) -> Fraction:
        """0-based bar position at `quarters` quarter notes from the start."""
        quarters = _position(quarters, "position in quarter notes")
        index = bisect_right(self._meter_quarters, quarters) - 1
        change = self.meters[index]
        return self._meter_bars[index] + (quarters - change.quarter) / change.meter.bar_quarters

    # -- quarter notes <-> seconds ---------------------------------------------------------------

    def quarters_to_seconds(self, quarters: Number) -> Fraction:
        quarters = _position(quarters, "position in quarter notes")
        index = bisect_right(self._tempo_quarters, quarters) - 1
        change = self.tempos[index]
        return self._tempo_seconds[index] + (quarters - change.quarter) * 60 / change.bpm

    def seconds_to_quarters(self, seconds: Number) -> Fraction:
        seconds = _position(seconds, "seconds")
        index = bisect_right(self._tempo_seconds, seconds) - 1
        change = self.tempos[index]
        return change.quarter + (seconds - self._tempo_seconds[index]) * change.bpm / 60

    # -- bars <-> seconds <-> samples --------------------------------------------------------------

    def bar_to_seconds(self, bar: Number) -> Fraction:
        return self.quarters_to_seconds(self.bar_to_quarters(bar))

    def seconds_to_bar(self, seconds: Number) -> Fraction:
        return self.quarters_to_bar(self.seconds_to_quarters(seconds))

    def bar_to_sample(self, bar: Number, sample_rate: Number) -> int:
        """The sample index where 0-based `bar` starts, rounded once from the exact time."""
        return _round_half_up(self.bar_to_seconds(bar) * _sample_rate(sample_rate))

    def sample_to_bar(self, sample: int, sample_rate: Number) -> Fraction:
        return self.seconds_to_bar(Fraction(_count(sample, "sample"), 1) / _sample_rate(sample_rate))

    def bar_range_to_samples(
        self, start_bar: Number, end_bar: Number, sample_rate: Number
    ) -> tuple[int, int]:
        """(first sample, one past the last sample) of bars [start_bar, end_bar); ranges that share
        a boundary share that sample, so consecutive ranges tile with no gap or overlap."""
        if _exact(end_bar, "end_bar") < _exact(start_bar, "start_bar"):
            raise ValueError(f"end_bar ({end_bar}) must not be before start_bar ({start_bar})")
        return self.bar_to_sample(start_bar, sample_rate), self.bar_to_sample(end_bar, sample_rate)

    # -- display positions ---------------------------------------------------------------------

    def bbt_to_bar(self, position: BarBeatTick, ticks_per_beat: int = DEFAULT_TICKS_PER_BEAT) -> Fraction:
        """0-based bar position of a 1-based bars:beats:ticks display position."""
        ticks_per_beat = _positive_int(ticks_per_beat, "ticks_per_beat")
        if _count(position.bar, "bar") < 1:
            raise ValueError(f"bar counts from 1, got {position.bar}")
        bar = position.bar - 1
        meter = self.meters[self._meter_index(Fraction(bar))].meter
        beat, tick = _count(position.beat, "beat"), _count(position.tick, "tick")
        if not 1 <= beat <= meter.numerator:
            raise ValueError(f"beat must be 1..{meter.numerator} in a bar of {meter}, got {beat}")
        if tick >= ticks_per_beat:
            raise ValueError(f"tick must be 0..{ticks_per_beat - 1}, got {tick}")
        result = bar + (beat - 1 + Fraction(tick, ticks_per_beat)) / meter.numerator
        self.bar_to_quarters(result)  # refuses a beat past the end of a cut-short bar
        return result

    def bar_to_bbt(self, bar: Number, ticks_per_beat: int = DEFAULT_TICKS_PER_BEAT) -> BarBeatTick:
        """The display position of 0-based `bar`, rounded to the nearest tick."""
        ticks_per_beat = _positive_int(ticks_per_beat, "ticks_per_beat")
        bar = _position(bar, "bar")
        self.bar_to_quarters(bar)
        index = self._meter_index(bar)
        whole = math.floor(bar)
        grid = self.meters[index].meter.numerator * ticks_per_beat
        rounded = whole + Fraction(_round_half_up((bar - whole) * grid), grid)
        end = self._segment_end_bar(index)
        if end is not None and rounded >= end:
            rounded = Fraction(self._meter_bars[index + 1])  # rounded past a cut-short bar's end
        whole = math.floor(rounded)
        beats = (rounded - whole) * self.meters[self._meter_index(rounded)].meter.numerator
        return BarBeatTick(
            whole + 1, math.floor(beats) + 1, int((beats - math.floor(beats)) * ticks_per_beat)
        )

    # -- context for prompts -------------------------------------------------------------------

    def tempo_at(self, bar: Number) -> float:
        """The tempo (quarter-note bpm) in force at 0-based `bar`."""
        quarters = self.bar_to_quarters(bar)
        return float(self.tempos[bisect_right(self._tempo_quarters, quarters) - 1].bpm)

    def meter_at(self, bar: Number) -> Meter:
        """The meter of the bar containing 0-based `bar`."""
        bar = _position(bar, "bar")
        self.bar_to_quarters(bar)
        return self.meters[self._meter_index(bar)].meter


def seconds_to_samples(seconds: Number, sample_rate: Number) -> int:
    """The sample index at `seconds`, rounded half up."""
    return _round_half_up(_position(seconds, "seconds") * _sample_rate(sample_rate))


def samples_to_seconds(samples: int, sample_rate: Number) -> Fraction:
    return _count(samples, "samples") / _sample_rate(sample_rate)


def samples_to_latent_frames(
    samples: int,
    sample_rate: Number,
    *,
    model_rate: Number = MODEL_SAMPLE_RATE,
    frame_samples: int = LATENT_FRAME_SAMPLES,
) -> int:
    """How many latent frames hold `samples` host samples: rounded up, as SA3 sizes its latents
    (`ceil(n / 4096)` at 44.1 kHz). `frame_samples` is the autoencoder's downsampling ratio."""
    at_model_rate = _count(samples, "samples") * _sample_rate(model_rate) / _sample_rate(sample_rate)
    return math.ceil(at_model_rate / _positive_int(frame_samples, "frame_samples"))


def latent_frames_to_samples(
    frames: int,
    sample_rate: Number,
    *,
    model_rate: Number = MODEL_SAMPLE_RATE,
    frame_samples: int = LATENT_FRAME_SAMPLES,
) -> int:
    """The host sample where latent frame `frames` starts, rounded half up."""
    model_samples = _count(frames, "frames") * _positive_int(frame_samples, "frame_samples")
    return _round_half_up(model_samples * _sample_rate(sample_rate) / _sample_rate(model_rate))
