"""Sound effects: risers, impacts, whooshes, UI beeps and clicks, noise ambiences.

Each is either tonal (a clear pitch: sine/square tones, pitched sweeps) or noisy (filtered noise),
recorded in ``meta["tonal"]`` so an evaluation can check it with a spectral-flatness measure.
"""

from __future__ import annotations

import numpy as np

from .core import SAMPLE_RATE, Clip, normalize, oscillator, pan_gains, perc, shaped_noise, swept_noise
from .effects import apply_once, random_chain

HOP = 512  # frames of swept_noise


def _seconds(rng: np.random.Generator, low: float, high: float) -> int:
    return int(rng.uniform(low, high) * SAMPLE_RATE)


def _frames(n: int) -> int:
    return n // HOP + 1


def riser(rng: np.random.Generator, tonal: bool) -> tuple[np.ndarray, dict]:
    """A build-up: a rising pitch (tonal) or a rising band of noise (noisy) that swells to its end."""
    n = _seconds(rng, 2.0, 8.0)
    curve = np.linspace(0, 1, n) ** rng.uniform(1.0, 2.5)
    swell = curve ** 1.5
    if tonal:
        start, octaves = rng.uniform(110, 330), rng.uniform(1.5, 3.0)
        hz = start * 2 ** (octaves * curve)
        shape = str(rng.choice(["sine", "saw", "square"]))
        tone = oscillator(shape, hz, n) + 0.5 * oscillator(shape, hz * 1.005, n, 0.3)
        audio = pan_gains(0.5)[:, None] * tone[None] * swell
        return audio, {"instrument": f"{shape} riser", "motion": "rising pitch"}
    centre = 200 * 2 ** (rng.uniform(4, 6) * curve[:: HOP][: _frames(n)])
    audio = swept_noise(rng, n, np.pad(centre, (0, _frames(n) - len(centre)), mode="edge"), rng.uniform(0.4, 1.0))
    return audio * swell, {"instrument": "white noise riser", "motion": "rising noise"}


def impact(rng: np.random.Generator, tonal: bool) -> tuple[np.ndarray, dict]:
    """A hit: a deep pitched boom (tonal) or a burst of broadband noise (noisy), with a long decay."""
    n = _seconds(rng, 1.0, 4.0)
    t = np.arange(n) / SAMPLE_RATE
    if tonal:
        hz = rng.uniform(40, 70) * (1 + 2 * np.exp(-t / 0.05))
        boom = oscillator("sine", hz, n) * perc(n, rng.uniform(0.4, 1.2))
        return pan_gains(0.5)[:, None] * boom[None], {"instrument": "sub boom", "motion": "hit"}
    burst = shaped_noise(rng, n, 40, 16000, tilt=-3.0, channels=2)
    return burst * perc(n, rng.uniform(0.15, 0.6)), {"instrument": "noise crash", "motion": "hit"}


def whoosh(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Noise whose band sweeps up then down while it swells and fades and pans across."""
    n = _seconds(rng, 1.0, 3.5)
    frames = _frames(n)
    arc = np.sin(np.linspace(0, np.pi, frames))
    centre = rng.uniform(300, 800) * 2 ** (rng.uniform(1.5, 3.5) * arc)
    audio = swept_noise(rng, n, centre, rng.uniform(0.5, 1.2))
    amp = np.sin(np.linspace(0, np.pi, n)) ** 2
    direction = 1.0 if rng.random() < 0.5 else -1.0
    pan = 0.5 + 0.45 * direction * np.linspace(-1, 1, n)
    gains = np.stack([np.cos(pan * np.pi / 2), np.sin(pan * np.pi / 2)]) * np.sqrt(2)
    return audio * amp * gains, {"instrument": "whoosh", "motion": "left to right" if direction > 0 else "right to left"}


def beeps(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """UI beeps: one to four short pure or square tones on pleasant intervals."""
    count = int(rng.integers(1, 5))
    base = rng.uniform(500, 1500)
    ratios = rng.choice([1.0, 1.25, 1.5, 2.0, 0.75], size=count)
    ratios[0] = 1.0
    shape = str(rng.choice(["sine", "sine", "square", "triangle"]))
    tone_len, gap = rng.uniform(0.05, 0.2), rng.uniform(0.02, 0.12)
    n = max(int(SAMPLE_RATE * (count * (tone_len + gap) + 0.3)), SAMPLE_RATE)
    out = np.zeros(n)
    m = int(tone_len * SAMPLE_RATE)
    env = np.minimum(1.0, np.minimum(np.arange(m), m - np.arange(m)) / 200.0)
    for i, r in enumerate(ratios):
        start = int(i * (tone_len + gap) * SAMPLE_RATE)
        out[start:start + m] += oscillator(shape, base * r, m) * env
    word = "confirmation" if count > 1 and ratios[-1] >= 1 else "notification"
    return pan_gains(0.5)[:, None] * out[None], {"instrument": f"{shape} beep", "motion": f"{word}, {count} tones"}


def clicks(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """UI clicks and taps: very short broadband transients."""
    count = int(rng.integers(1, 6))
    n = SAMPLE_RATE + int(count * 0.15 * SAMPLE_RATE)
    out = np.zeros((2, n))
    m = int(rng.uniform(0.004, 0.02) * SAMPLE_RATE)
    for i in range(count):
        click = shaped_noise(rng, m, rng.uniform(800, 3000), 16000) * perc(m, m / SAMPLE_RATE / 4, 0.0002)
        start = int((0.05 + i * rng.uniform(0.08, 0.15)) * SAMPLE_RATE)
        out[:, start:start + m] += pan_gains(rng.uniform(0.4, 0.6))[:, None] * click[None]
    return out, {"instrument": "click", "motion": f"{count} clicks"}


def ambience(rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Noise beds: wind (slowly wandering band), rain (dense crackle), room tone (dark steady noise)."""
    n = _seconds(rng, 4.0, 30.0)
    kind = str(rng.choice(["wind", "rain", "room tone"]))
    if kind == "wind":
        frames = _frames(n)
        wander = np.cumsum(rng.standard_normal(frames)) * 0.02
        centre = 400 * 2 ** (wander - wander.mean())
        audio = swept_noise(rng, n, centre, 1.2) * (0.6 + 0.4 * np.sin(np.linspace(0, 6, n) + rng.uniform(0, 6)))
    elif kind == "rain":
        audio = shaped_noise(rng, n, 1000, 14000, tilt=-2.0, channels=2) * 0.4
        drops = rng.random((2, n)) < 0.0008
        audio += np.stack([np.convolve(d * rng.standard_normal(n), np.exp(-np.arange(80) / 10.0), "same")
                           for d in drops])
    else:
        audio = shaped_noise(rng, n, 30, 3000, tilt=-4.0, channels=2)
    return audio, {"instrument": f"{kind} ambience", "motion": "steady"}


# (subtype, tonal) -> maker; subtypes with both variants take a ``tonal`` argument.
SFX_KINDS = {
    ("riser", True): lambda rng: riser(rng, True),
    ("riser", False): lambda rng: riser(rng, False),
    ("impact", True): lambda rng: impact(rng, True),
    ("impact", False): lambda rng: impact(rng, False),
    ("whoosh", False): whoosh,
    ("ui beep", True): beeps,
    ("ui click", False): clicks,
    ("ambience", False): ambience,
}
SFX_MOODS = {True: ("bright", "clean", "synthetic", "digital"), False: ("gritty", "airy", "textured", "raw")}


def sfx_clip(rng: np.random.Generator, kind: tuple[str, bool] | None = None) -> Clip:
    """One sound effect (not a loop): ``kind`` is (subtype, tonal), random when None."""
    keys = list(SFX_KINDS)
    subtype, tonal = kind or keys[int(rng.integers(len(keys)))]
    audio, meta = SFX_KINDS[(subtype, tonal)](rng)
    board, words = random_chain(rng, "sfx")
    audio = normalize(apply_once(board, audio), rng)
    meta.update({"subtype": subtype, "tonal": tonal, "loop": False, "effects": words,
                 "mood": str(rng.choice(SFX_MOODS[tonal]))})
    return Clip(audio, "sfx", meta=meta)
