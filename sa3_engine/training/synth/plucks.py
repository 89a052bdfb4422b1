"""Plucked patterns and arpeggios over a chord progression in a key."""

from __future__ import annotations

import numpy as np

from .chords import chord, progression
from .core import Clip, Grid, choose_grid, choose_key
from .instruments import Note, Patch, pick_patch, tonal_loop

PLUCK_PATCHES = (
    Patch("pluck", "pluck", 0.0, 0.3, 0.0, 0.05, brightness=1.0),
    Patch("harp", "pluck", 0.0, 0.8, 0.0, 0.2, brightness=0.5),
    Patch("marimba", "sine", 0.001, 0.15, 0.0, 0.1),
    Patch("kalimba", "fm", 0.001, 0.25, 0.0, 0.15),
    Patch("guitar pluck", "pluck", 0.0, 0.5, 0.0, 0.08, brightness=1.6),
)
ARP_PATCHES = (
    Patch("saw arp", "saw", 0.002, 0.12, 0.3, 0.08),
    Patch("square arp", "square", 0.002, 0.1, 0.3, 0.06),
    Patch("bell arp", "fm", 0.001, 0.3, 0.0, 0.2),
    Patch("pluck arp", "pluck", 0.0, 0.25, 0.0, 0.05, brightness=1.2),
)
PLUCK_GENRES = ("tropical house", "future bass", "lo-fi", "pop", "ambient", "chillout", "afro house", "indie")
ARP_GENRES = ("trance", "synthwave", "techno", "electronic", "cinematic", "progressive house", "retro")
ARP_ORDERS = ("up", "down", "up-down", "random")


def _arp_sequence(order: str, tones: list[int], count: int, rng: np.random.Generator) -> list[int]:
    if order == "up":
        cycle = tones
    elif order == "down":
        cycle = tones[::-1]
    elif order == "up-down":
        cycle = tones + tones[-2:0:-1]
    else:
        return [int(t) for t in rng.choice(tones, size=count)]
    return [cycle[i % len(cycle)] for i in range(count)]


def arp_loop(rng: np.random.Generator, grid: Grid | None = None, key: tuple[int, str] | None = None) -> Clip:
    """Chord tones over two octaves, one per sixteenth or eighth note, in a fixed order."""
    grid = grid or choose_grid(rng)
    tonic, scale = key or choose_key(rng)
    patch = pick_patch(rng, ARP_PATCHES)
    order = str(rng.choice(ARP_ORDERS))
    rate = int(rng.choice([1, 2]))
    steps = grid.steps_per_bar
    notes = []
    for bar, root in enumerate(progression(rng, grid.bars)):
        tones = chord(tonic, scale, root, 3, 60)
        tones = tones + [t + 12 for t in tones]
        for i, midi in enumerate(_arp_sequence(order, tones, steps // rate, rng)):
            notes.append(Note(bar * steps + i * rate, rate * 0.8, midi, 1.0 if i % 4 == 0 else 0.75))
    return tonal_loop(rng, "arp", patch, notes, grid, tonic, scale, genre=str(rng.choice(ARP_GENRES)),
                      arp=order, rate="16th" if rate == 1 else "8th")


def pluck_loop(rng: np.random.Generator, grid: Grid | None = None, key: tuple[int, str] | None = None) -> Clip:
    """Syncopated chord stabs and single plucks that follow a progression."""
    grid = grid or choose_grid(rng)
    tonic, scale = key or choose_key(rng)
    patch = pick_patch(rng, PLUCK_PATCHES)
    steps = grid.steps_per_bar
    rhythm = np.union1d(np.flatnonzero(rng.random(steps) < 0.4), [0])
    stabs = rng.random() < 0.5
    notes = []
    for bar, root in enumerate(progression(rng, grid.bars)):
        tones = chord(tonic, scale, root, 3, 60)
        for step in rhythm:
            played = tones if stabs else [int(rng.choice(tones))]
            notes += [Note(bar * steps + step, 1.5, m, rng.uniform(0.6, 1.0)) for m in played]
    return tonal_loop(rng, "pluck", patch, notes, grid, tonic, scale, genre=str(rng.choice(PLUCK_GENRES)),
                      style="chord stabs" if stabs else "melodic plucks")
