"""Chord progressions in a key, and the sustained pads that play them."""

from __future__ import annotations

import numpy as np

from .core import SCALES, Clip, Grid, choose_grid, choose_key, scale_midi
from .instruments import Note, Patch, pick_patch, tonal_loop

PAD_PATCHES = (
    Patch("warm pad", "saw", 0.4, 1.0, 0.8, 0.8, voices=4, cents=12.0),
    Patch("string pad", "saw", 0.25, 0.8, 0.85, 0.6, voices=6, cents=8.0),
    Patch("glass pad", "triangle", 0.3, 1.2, 0.7, 1.0, voices=3, cents=6.0),
    Patch("organ", "square", 0.02, 0.5, 0.9, 0.1, voices=2, cents=3.0),
    Patch("electric piano", "fm", 0.003, 0.8, 0.3, 0.4),
    Patch("soft keys", "sine", 0.01, 0.9, 0.4, 0.5, voices=2, cents=4.0),
)
PAD_GENRES = ("ambient", "cinematic", "lo-fi", "chillout", "synthwave", "house", "pop", "soul", "downtempo")
PROGRESSIONS = ((0, 4, 5, 3), (0, 5, 3, 4), (0, 3, 4, 0), (0, 5, 1, 4), (0, 3, 0, 4), (0, 6, 5, 4), (0, 2, 5, 4))


def progression(rng: np.random.Generator, bars: int) -> list[int]:
    """Scale degrees of the chord roots, one per bar (a one-bar loop holds the tonic chord)."""
    if bars == 1:
        return [0]
    shape = PROGRESSIONS[int(rng.integers(len(PROGRESSIONS)))]
    return [shape[i % len(shape)] for i in range(bars)]


def chord(tonic: int, scale: str, root_degree: int, size: int, base_midi: int) -> list[int]:
    """A chord stacked in scale thirds (every other scale note), so every note belongs to the scale."""
    degrees = root_degree + 2 * np.arange(size)
    if len(SCALES[scale]) == 5:  # pentatonic scales: adjacent steps already make open, in-scale voicings
        degrees = root_degree + np.arange(size) * 2 - np.arange(size) // 2
    return [int(m) for m in scale_midi(tonic, scale, degrees, base_midi)]


def pad_loop(rng: np.random.Generator, grid: Grid | None = None, key: tuple[int, str] | None = None) -> Clip:
    """Sustained chords, one per bar, voiced around middle C."""
    grid = grid or choose_grid(rng)
    tonic, scale = key or choose_key(rng)
    patch = pick_patch(rng, PAD_PATCHES)
    size = int(rng.choice([3, 3, 4]))
    roots = progression(rng, grid.bars)
    steps = grid.steps_per_bar
    notes = []
    for bar, root in enumerate(roots):
        for midi in chord(tonic, scale, root, size, 52):
            notes.append(Note(bar * steps, steps * 0.95, midi, rng.uniform(0.6, 0.8)))
    names = ["i" if r == 0 else str(r + 1) for r in roots]
    return tonal_loop(rng, "pad", patch, notes, grid, tonic, scale, genre=str(rng.choice(PAD_GENRES)),
                      progression=names)
