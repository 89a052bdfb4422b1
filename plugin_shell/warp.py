"""Warp to the tempo map: audio generated at one reference tempo, stretched so every beat lands on the
host's grid across tempo changes.

A model plays at the one tempo its prompt names. Where a timeline range crosses tempo changes, the
shell asks for audio at a constant reference tempo and `warp` maps it onto the grid: the range is cut
into pieces, each stretched on its own by Rubber Band (`pedalboard.time_stretch`) from its length at the
reference tempo to its exact length on the host's grid. Pieces end at every tempo change and halfway
between quarter notes, so each beat is re-anchored: Rubber Band keeps transients crisp by moving
them a little, and that wander (measured up to ~12 ms over a few seconds) never accumulates past one
beat. Neighbouring pieces are crossfaded just before each cut, so the audio at a cut is the piece
that owns it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise

import numpy as np
from pedalboard import time_stretch

from bridge.timeline import TempoMap, seconds_to_samples
from plugin_shell.dsp import fit

HANDLE_SECONDS = 0.1  # reference audio each side of a piece that Rubber Band also hears
METHOD = "pedalboard.time_stretch (Rubber Band), per piece, pieces cut at tempo changes and mid-beat"


@dataclass(frozen=True)
class Piece:
    """Samples [source) of the reference-tempo audio become samples [target) of the placed audio."""

    source: tuple[int, int]
    target: tuple[int, int]
    bpm: Fraction  # the host's tempo over this piece

    @property
    def stretch(self) -> float:
        """Rubber Band's stretch factor: source length / target length (above 1 shortens)."""
        return (self.source[1] - self.source[0]) / (self.target[1] - self.target[0])


@dataclass(frozen=True)
class WarpPlan:
    reference_bpm: Fraction
    pieces: tuple[Piece, ...]

    @property
    def source_length(self) -> int:
        """How many samples of reference-tempo audio the range needs."""
        return self.pieces[-1].source[1]

    @property
    def target_length(self) -> int:
        return self.pieces[-1].target[1]

    def sidecar(self) -> dict:
        """What the sidecar records: the reference tempo and each tempo segment's stretch."""
        segments: list[dict] = []
        for piece in self.pieces:
            if segments and segments[-1]["bpm"] == float(piece.bpm):
                segments[-1].update(end=piece.target[1], source_end=piece.source[1])
            else:
                segments.append({"bpm": float(piece.bpm), "start": piece.target[0], "end": piece.target[1],
                                 "source_start": piece.source[0], "source_end": piece.source[1]})
        for segment in segments:
            segment["stretch"] = (segment["source_end"] - segment["source_start"]) / (segment["end"] - segment["start"])
        return {"applied": True, "reference_bpm": float(self.reference_bpm), "method": METHOD, "segments": segments,
                "pieces": len(self.pieces)}


def tempo_changes_within(tempo_map: TempoMap, sample_rate: int, start: int, end: int) -> bool:
    """Whether the tempo changes anywhere inside samples [start, end)."""
    q0, q1 = (tempo_map.seconds_to_quarters(Fraction(s, sample_rate)) for s in (start, end))
    bpm_at_start = _bpm_at(tempo_map, q0)
    return any(q0 < t.quarter < q1 and t.bpm != bpm_at_start for t in tempo_map.tempos)


def plan(tempo_map: TempoMap, sample_rate: int, start: int, end: int, reference_bpm: Fraction) -> WarpPlan:
    """How samples [start, end) of the host timeline are made from audio at `reference_bpm`, which
    starts at `start`; targets are relative to `start`, exact on the host's grid."""
    if end <= start:
        raise ValueError(f"warp range: need start < end, got {start}..{end}")
    reference_bpm = Fraction(reference_bpm)
    q0, q1 = (tempo_map.seconds_to_quarters(Fraction(s, sample_rate)) for s in (start, end))
    cuts = {q0, q1} | {t.quarter for t in tempo_map.tempos if q0 < t.quarter < q1}
    cuts |= {k + Fraction(1, 2) for k in range(math.floor(q0), math.ceil(q1)) if q0 < k + Fraction(1, 2) < q1}
    cuts = sorted(cuts)

    def target(q: Fraction) -> int:
        return seconds_to_samples(tempo_map.quarters_to_seconds(q), sample_rate) - start

    def source(q: Fraction) -> int:
        return seconds_to_samples((q - q0) * 60 / reference_bpm, sample_rate)

    pieces = tuple(
        Piece((source(a), source(b)), (target(a), target(b)), _bpm_at(tempo_map, a))
        for a, b in pairwise(cuts)
        if target(b) > target(a) and source(b) > source(a)
    )
    return WarpPlan(reference_bpm, pieces)


def warp(audio: np.ndarray, sample_rate: int, warp_plan: WarpPlan, *, offset: int = 0,
         crossfade: int | None = None) -> np.ndarray:
    """The placed audio, `warp_plan.target_length` samples, from reference-tempo `audio` whose sample
    `offset` is where the plan's source starts (audio around it serves as handles).

    `crossfade` (default 5 ms) is how long a piece fades in before its cut while the one before fades out.
    """
    fade = round(0.005 * sample_rate) if crossfade is None else crossfade
    handle = round(HANDLE_SECONDS * sample_rate)
    out = np.zeros((audio.shape[0], warp_plan.target_length), dtype=np.float32)
    for i, piece in enumerate(warp_plan.pieces):
        (s0, s1), (t0, t1) = piece.source, piece.target
        s0, s1 = s0 + offset, s1 + offset
        if s1 > audio.shape[1]:
            raise ValueError(f"audio: the warp needs {s1} samples of reference audio, got {audio.shape[1]}")
        pre, post = min(handle, s0), min(handle, audio.shape[1] - s1)
        stretched = time_stretch(np.ascontiguousarray(audio[:, s0 - pre : s1 + post]), sample_rate, piece.stretch)
        head = round(pre / piece.stretch)
        lead = min(fade, head, t0) if i else 0
        part = fit(stretched[:, head - lead :], lead + t1 - t0)
        if lead:
            ramp = (np.arange(lead, dtype=np.float32) + 0.5) / lead
            out[:, t0 - lead : t0] = out[:, t0 - lead : t0] * (1 - ramp) + part[:, :lead] * ramp
        out[:, t0:t1] = part[:, lead:]
    return out


def _bpm_at(tempo_map: TempoMap, quarter: Fraction) -> Fraction:
    return next(t.bpm for t in reversed(tempo_map.tempos) if t.quarter <= quarter)
