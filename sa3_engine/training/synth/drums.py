"""Drum loops: synthesized kit pieces placed on a sixteenth-note grid in 4/4, 3/4, 6/8 or 7/8."""

from __future__ import annotations

import numpy as np

from .core import (
    METERS,
    SAMPLE_RATE,
    Clip,
    Grid,
    choose_grid,
    loop_buffer,
    normalize,
    perc,
    place,
    shaped_noise,
    wrap,
)
from .effects import apply_loop, random_chain

KITS = ("electronic", "acoustic", "lo-fi", "808")
DRUM_GENRES = {
    "4/4": ("techno", "house", "hip hop", "breakbeat", "drum and bass", "pop", "funk", "trap"),
    "3/4": ("waltz", "jazz", "folk", "ballad"),
    "6/8": ("blues", "afro", "shuffle", "ballad"),
    "7/8": ("progressive", "balkan", "math rock", "odd-meter"),
}


def _sweep_sine(n: int, start_hz: float, end_hz: float, tau: float) -> np.ndarray:
    """A sine whose frequency glides exponentially from start_hz to end_hz (time constant tau seconds)."""
    t = np.arange(n) / SAMPLE_RATE
    phase = end_hz * t + (start_hz - end_hz) * tau * (1.0 - np.exp(-t / tau))
    return np.sin(2 * np.pi * phase)


def kit_sounds(rng: np.random.Generator, kit: str) -> dict[str, np.ndarray]:
    """One mono sample per kit piece; the loop reuses them, as a drum machine does."""
    long = kit == "808"
    n_kick = int((0.9 if long else 0.45) * SAMPLE_RATE)
    kick_hz = rng.uniform(42, 62)
    kick = _sweep_sine(n_kick, rng.uniform(120, 220), kick_hz, rng.uniform(0.02, 0.05))
    kick = kick * perc(n_kick, 0.45 if long else rng.uniform(0.12, 0.25))
    kick[:200] += shaped_noise(rng, 200, 2000, 12000) * np.linspace(0.6, 0, 200)
    n_snare = int(0.35 * SAMPLE_RATE)
    body = _sweep_sine(n_snare, rng.uniform(220, 300), rng.uniform(160, 200), 0.03) * perc(n_snare, 0.06)
    low = 1500 if kit == "lo-fi" else 1000
    snare = 0.6 * body + shaped_noise(rng, n_snare, low, 9000) * perc(n_snare, rng.uniform(0.08, 0.18))
    n_hat = int(0.5 * SAMPLE_RATE)
    metal = sum(np.sign(np.sin(2 * np.pi * f * np.arange(n_hat) / SAMPLE_RATE)) for f in (317, 421, 563, 793))
    hat_src = 0.6 * shaped_noise(rng, n_hat, 7000, 18000) + 0.1 * metal / 4
    top = 10000 if kit == "lo-fi" else 20000
    hat_src = shaped_noise(rng, n_hat, 6000, top) if kit == "acoustic" else hat_src
    closed = hat_src * perc(n_hat, rng.uniform(0.02, 0.05))
    opened = hat_src * perc(n_hat, rng.uniform(0.15, 0.3))
    n_perc = int(0.4 * SAMPLE_RATE)
    tom = _sweep_sine(n_perc, rng.uniform(150, 260), rng.uniform(90, 140), 0.05) * perc(n_perc, 0.15)
    clap = shaped_noise(rng, n_perc, 800, 6000) * perc(n_perc, 0.09)
    for offset in (0.01, 0.02):  # the three quick bursts of a hand clap
        k = int(offset * SAMPLE_RATE)
        clap[k:] += 0.7 * clap[: n_perc - k]
    shaker = shaped_noise(rng, n_perc, 4000, 14000) * perc(n_perc, 0.04, attack=0.01)
    return {"kick": kick, "snare": snare, "clap": clap, "hat": closed, "open_hat": opened,
            "tom": tom, "shaker": shaker}


def pattern(rng: np.random.Generator, grid: Grid) -> dict[str, np.ndarray]:
    """Per kit piece, a velocity per sixteenth step of one bar (0 = silent).

    Kicks mark the meter's accent groups, snares the back beats, hats every eighth or sixteenth, so the
    beat is unambiguous; a few random ghost notes and percussion hits keep patterns varied.
    """
    steps = grid.steps_per_bar
    groups = np.cumsum((0,) + METERS[grid.meter][2])[:-1] * 2  # group starts, in sixteenths
    vel = {name: np.zeros(steps) for name in ("kick", "snare", "clap", "hat", "open_hat", "tom", "shaker")}
    vel["kick"][groups[0]] = 1.0
    if grid.meter == "4/4":
        vel["kick"][8] = 0.9
        backbeats = [4, 12]
    elif grid.meter == "3/4":
        backbeats = [4, 8]
    else:
        backbeats = list(groups[1:])
    for step in rng.choice(np.arange(2, steps, 2), size=int(rng.integers(0, 3)), replace=False):
        if step not in backbeats:
            vel["kick"][step] = rng.uniform(0.6, 0.9)
    snare = "clap" if rng.random() < 0.3 else "snare"
    vel[snare][backbeats] = 0.85 if grid.meter == "3/4" else 1.0
    ghosts = rng.choice(np.arange(1, steps, 2), size=int(rng.integers(0, 3)), replace=False)
    vel["snare"][ghosts] = rng.uniform(0.15, 0.3, size=len(ghosts))
    hat_every = 1 if rng.random() < 0.4 else 2
    vel["hat"][::hat_every] = np.where(np.arange(0, steps, hat_every) % 4 == 0, 0.8, 0.5)
    if rng.random() < 0.4:
        open_step = int(rng.choice(np.arange(2, steps, 4)))
        vel["open_hat"][open_step], vel["hat"][open_step] = 0.6, 0.0
    extra = "tom" if rng.random() < 0.5 else "shaker"
    hits = rng.choice(np.arange(steps), size=int(rng.integers(0, 4)), replace=False)
    vel[extra][hits] = rng.uniform(0.3, 0.7, size=len(hits))
    return vel


PANS = {"kick": 0.5, "snare": 0.5, "clap": 0.5, "hat": 0.62, "open_hat": 0.62, "tom": 0.35, "shaker": 0.7}


def drum_loop(rng: np.random.Generator, grid: Grid | None = None, kit: str | None = None) -> Clip:
    """A seamless drum loop; ``meta`` holds the tempo, meter, bars, kit and the pieces that play."""
    grid = grid or choose_grid(rng)
    kit = kit or str(rng.choice(KITS))
    sounds = kit_sounds(rng, kit)
    vel = pattern(rng, grid)
    swing = rng.uniform(0.0, 0.25) if grid.meter in ("4/4", "3/4") and rng.random() < 0.3 else 0.0
    buffer = loop_buffer(grid, tail_seconds=1.0)
    jitter = int(0.002 * SAMPLE_RATE)
    for bar in range(grid.bars):
        fill = bar == grid.bars - 1 and grid.bars > 1 and rng.random() < 0.5
        for name, velocities in vel.items():
            for step in np.flatnonzero(velocities):
                late = swing if step % 2 == 1 else 0.0
                start = int(grid.step_sample(bar * grid.steps_per_bar + step + late))
                start += int(rng.integers(0, jitter + 1)) if kit != "808" else 0
                gain = velocities[step] * rng.uniform(0.9, 1.0)
                place(buffer, sounds[name], start, gain, PANS[name])
        if fill:  # a tom or snare run over the last beat
            for step in range(grid.steps_per_bar - 4, grid.steps_per_bar):
                start = int(grid.step_sample(bar * grid.steps_per_bar + step))
                place(buffer, sounds["tom"], start, 0.6, 0.3 + 0.1 * (step % 4))
    board, words = random_chain(rng, "drums", loop_seconds=grid.samples / SAMPLE_RATE)
    audio = normalize(apply_loop(board, wrap(buffer, grid.samples)), rng)
    playing = sorted(name for name, v in vel.items() if v.any())
    meta = {"bpm": grid.bpm, "meter": grid.meter, "bars": grid.bars, "kit": kit, "swing": round(swing, 3),
            "pieces": playing, "effects": words, "instrument": f"{kit} drum kit", "loop": True, "tonal": False,
            "genre": str(rng.choice(DRUM_GENRES[grid.meter]))}
    return Clip(audio, "drums", meta=meta)
