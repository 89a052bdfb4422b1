"""Bass lines and lead melodies in a given key and scale, as seamless loops."""

from __future__ import annotations

import numpy as np

from .core import Clip, Grid, choose_grid, choose_key, scale_midi
from .instruments import Note, Patch, pick_patch, tonal_loop

BASS_PATCHES = (
    Patch("sub bass", "sine", 0.005, 0.3, 0.8, 0.05),
    Patch("synth bass", "saw", 0.003, 0.15, 0.5, 0.04),
    Patch("square bass", "square", 0.003, 0.2, 0.6, 0.04),
    Patch("fm bass", "fm", 0.002, 0.12, 0.4, 0.05),
    Patch("reese bass", "saw", 0.01, 0.5, 0.9, 0.08, voices=2, cents=14.0),
    Patch("plucked bass", "pluck", 0.0, 0.35, 0.0, 0.05, brightness=0.6),
)
LEAD_PATCHES = (
    Patch("saw lead", "saw", 0.01, 0.3, 0.7, 0.1),
    Patch("square lead", "square", 0.01, 0.2, 0.6, 0.1),
    Patch("supersaw lead", "saw", 0.01, 0.4, 0.8, 0.15, voices=5, cents=18.0),
    Patch("sine lead", "sine", 0.02, 0.4, 0.8, 0.12),
    Patch("flute-like lead", "triangle", 0.04, 0.3, 0.8, 0.1),
    Patch("bell lead", "fm", 0.002, 0.5, 0.0, 0.4),
)
MELODIC_GENRES = ("electronic", "synthwave", "house", "techno", "hip hop", "ambient", "pop", "funk", "trance")


def bass_notes(rng: np.random.Generator, grid: Grid, tonic: int, scale: str) -> list[Note]:
    """Root on every bar's downbeat, other steps from a small rhythm of chord tones and neighbours."""
    steps = grid.steps_per_bar
    rhythm = np.flatnonzero(rng.random(steps) < rng.uniform(0.25, 0.5))
    rhythm = np.union1d(rhythm, [0])
    degrees_per_bar = rng.choice([0, 0, 3, 4, 5, -2], size=grid.bars)  # a bar's harmonic root, tonic weighted
    degrees_per_bar[0] = 0
    notes = []
    for bar in range(grid.bars):
        for i, step in enumerate(rhythm):
            nxt = rhythm[i + 1] if i + 1 < len(rhythm) else steps
            offset = 0 if step == 0 or rng.random() < 0.6 else int(rng.choice([2, 4, 7, 1]))
            degree = degrees_per_bar[bar] + offset
            midi = int(scale_midi(tonic, scale, degree, 36))
            notes.append(Note(bar * steps + step, max(1.0, (nxt - step) * rng.uniform(0.5, 0.95)), midi,
                              1.0 if step == 0 else rng.uniform(0.6, 0.9)))
    return notes


def lead_notes(rng: np.random.Generator, grid: Grid, tonic: int, scale: str) -> list[Note]:
    """A stepwise random walk on the scale, phrased in one- or two-bar motifs that repeat."""
    steps = grid.steps_per_bar
    motif_bars = 1 if grid.bars == 1 or rng.random() < 0.5 else 2
    length = motif_bars * steps
    starts = np.union1d(np.flatnonzero(rng.random(length) < 0.35), [0])
    walk = np.cumsum(rng.choice([-2, -1, -1, 0, 1, 1, 2, 3], size=len(starts)))
    walk[0] = 0
    degrees = np.clip(walk, -3, 9)
    motif = []
    for i, step in enumerate(starts):
        nxt = starts[i + 1] if i + 1 < len(starts) else length
        motif.append((step, max(1.0, (nxt - step) * rng.uniform(0.6, 1.0)), int(degrees[i])))
    notes = []
    for rep in range(int(np.ceil(grid.bars / motif_bars))):
        varied = rep % 2 == 1 and rng.random() < 0.5  # answer phrase: last note moves to the tonic or fifth
        for j, (step, gate, degree) in enumerate(motif):
            if varied and j == len(motif) - 1:
                degree = int(rng.choice([0, 4, 7]))
            start = rep * length + step
            if start < grid.bars * steps:
                notes.append(Note(start, gate, int(scale_midi(tonic, scale, degree, 60)), rng.uniform(0.7, 1.0)))
    return notes


def _line_loop(rng, category, patches, write_notes, grid, key) -> Clip:
    grid = grid or choose_grid(rng)
    tonic, scale = key or choose_key(rng)
    patch = pick_patch(rng, patches)
    return tonal_loop(rng, category, patch, write_notes(rng, grid, tonic, scale), grid, tonic, scale,
                      genre=str(rng.choice(MELODIC_GENRES)))


def bass_loop(rng: np.random.Generator, grid: Grid | None = None, key: tuple[int, str] | None = None) -> Clip:
    return _line_loop(rng, "bass", BASS_PATCHES, bass_notes, grid, key)


def lead_loop(rng: np.random.Generator, grid: Grid | None = None, key: tuple[int, str] | None = None) -> Clip:
    return _line_loop(rng, "lead", LEAD_PATCHES, lead_notes, grid, key)
