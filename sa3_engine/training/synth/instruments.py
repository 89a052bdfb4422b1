"""Synth patches and the note renderer shared by bass, lead, pad, pluck and arp loops."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .core import (
    SAMPLE_RATE,
    Clip,
    Grid,
    adsr,
    detuned,
    key_name,
    loop_buffer,
    midi_hz,
    normalize,
    oscillator,
    pan_gains,
    wrap,
)
from .effects import apply_loop, random_chain


@dataclass(frozen=True)
class Patch:
    """How one instrument sounds: oscillator, unison, envelope, and the name a caption uses for it."""

    name: str
    shape: str  # saw | square | triangle | sine | fm | pluck
    attack: float
    decay: float
    sustain: float
    release: float
    voices: int = 1
    cents: float = 0.0
    brightness: float = 1.0  # pluck only: how slowly the upper harmonics die (higher = brighter)


@dataclass(frozen=True)
class Note:
    step: float  # start, in sixteenths from the loop start
    length: float  # gate, in sixteenths
    midi: int
    velocity: float = 1.0


def pluck_tone(hz: float, n: int, decay: float, brightness: float) -> np.ndarray:
    """A plucked string: harmonics with 1/k amplitudes, each decaying faster the higher it is."""
    t = np.arange(n) / SAMPLE_RATE
    top = int(min(16, SAMPLE_RATE / 2 / hz - 1))
    out = np.zeros(n)
    for k in range(1, max(top, 1) + 1):
        out += np.sin(2 * np.pi * k * hz * t) / k * np.exp(-t * k / (decay * brightness * 4.0))
    return out * np.exp(-t / decay)


def render_note(patch: Patch, note: Note, grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """One note as stereo ``(2, n)``: gate from the grid plus the release tail."""
    hz = float(midi_hz(note.midi))
    gate = int(note.length * grid.step_seconds * SAMPLE_RATE)
    n = gate + int(min(patch.release * 5, 2.0) * SAMPLE_RATE)
    if patch.shape == "pluck":
        tone = pluck_tone(hz, n, patch.decay, patch.brightness)
        return pan_gains(0.5)[:, None] * (tone * adsr(n, 0.002, 10.0, 1.0, patch.release, gate))[None]
    env = adsr(n, patch.attack, patch.decay, patch.sustain, patch.release, gate)
    if patch.voices > 1:
        return detuned(patch.shape, hz, n, patch.voices, patch.cents, rng) * env
    return pan_gains(0.5)[:, None] * (oscillator(patch.shape, hz, n, float(rng.random())) * env)[None]


def render_notes(patch: Patch, notes: list[Note], grid: Grid, rng: np.random.Generator) -> np.ndarray:
    """All notes into one buffer, then their tails folded back over the loop start.

    A repeated (pitch, length) reuses its first rendering, as a sampler would: loops repeat notes a lot.
    """
    buffer = loop_buffer(grid, tail_seconds=2.5)
    rendered: dict[tuple[int, float], np.ndarray] = {}
    for note in notes:
        key = (note.midi, round(note.length, 2))
        if key not in rendered:
            rendered[key] = render_note(patch, note, grid, rng)
        sound = rendered[key]
        start = int(grid.step_sample(note.step))
        end = min(buffer.shape[1], start + sound.shape[1])
        buffer[:, start:end] += note.velocity * sound[:, : end - start]
    return wrap(buffer, grid.samples)


def tonal_loop(
    rng: np.random.Generator,
    category: str,
    patch: Patch,
    notes: list[Note],
    grid: Grid,
    tonic: int,
    scale: str,
    **extra,
) -> Clip:
    """Render, add a random effect chain (loop-safe), normalise and describe a melodic or harmonic loop."""
    dry = render_notes(patch, notes, grid, rng)
    board, words = random_chain(rng, "tonal", loop_seconds=grid.samples / SAMPLE_RATE)
    audio = normalize(apply_loop(board, dry), rng)
    meta = {"bpm": grid.bpm, "meter": grid.meter, "bars": grid.bars, "key": tonic, "key_name": key_name(tonic, scale),
            "scale": scale, "instrument": patch.name, "loop": True, "tonal": True, "effects": words,
            "pitches": sorted({n.midi % 12 for n in notes}), **extra}
    return Clip(audio, category, meta=meta)


def pick_patch(rng: np.random.Generator, patches: tuple[Patch, ...]) -> Patch:
    return patches[int(rng.integers(len(patches)))]
