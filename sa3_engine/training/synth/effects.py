"""Random pedalboard effect chains, applied so loops still wrap seamlessly.

A loop is processed after a lead-in of its own end, repeated, and only the loop itself is kept: by then
the effects' memory (reverb tails, delay lines, compressor state) holds what it would in endless
playback, so the processed loop's end continues into its own start. One-shots are processed once with room for the tail.
"""

from __future__ import annotations

import numpy as np
from pedalboard import (
    Chorus,
    Compressor,
    Delay,
    Distortion,
    HighpassFilter,
    LadderFilter,
    LowpassFilter,
    Pedalboard,
    Phaser,
    Reverb,
)

from .core import SAMPLE_RATE

# Longest memory any chain below can have, in seconds (reverb decay and delay feedback dominate).
EFFECT_MEMORY_SECONDS = 3.0


def _synced(rate_hz: float, loop_seconds: float | None) -> float:
    """An LFO rate rounded to a whole number of cycles per loop, so modulation repeats with the loop."""
    if not loop_seconds:
        return rate_hz
    return max(1, round(rate_hz * loop_seconds)) / loop_seconds


def random_chain(rng: np.random.Generator, kind: str,
                 loop_seconds: float | None = None) -> tuple[Pedalboard, list[str]]:
    """A chain suited to ``kind`` ("drums", "tonal", "sfx") and the plain-language words it adds.

    ``loop_seconds``: for loops, LFO rates (chorus, phaser) fit a whole number of cycles in the loop;
    otherwise the modulation would be at a different phase where the loop wraps, and the seam would show.
    """
    plugins, words = [], []

    def maybe(p: float) -> bool:
        return bool(rng.random() < p)

    if kind == "drums" and maybe(0.5):
        plugins.append(Compressor(threshold_db=float(rng.uniform(-24, -10)), ratio=float(rng.uniform(2, 6)),
                                  attack_ms=float(rng.uniform(1, 15)), release_ms=float(rng.uniform(50, 200))))
        words.append("punchy")
    if maybe(0.3 if kind != "tonal" else 0.25):
        plugins.append(Distortion(drive_db=float(rng.uniform(4, 18))))
        words.append("distorted")
    if kind == "tonal" and maybe(0.5):
        plugins.append(LadderFilter(mode=LadderFilter.Mode.LPF24, cutoff_hz=float(rng.uniform(600, 6000)),
                                    resonance=float(rng.uniform(0.0, 0.6))))
        words.append("filtered")
    elif maybe(0.3):
        if maybe(0.5):
            plugins.append(LowpassFilter(cutoff_frequency_hz=float(rng.uniform(1500, 8000))))
            words.append("dark")
        else:
            plugins.append(HighpassFilter(cutoff_frequency_hz=float(rng.uniform(100, 600))))
            words.append("thin")
    if kind == "tonal" and maybe(0.3):
        plugins.append(Chorus(rate_hz=_synced(float(rng.uniform(0.3, 2.0)), loop_seconds), depth=float(rng.uniform(0.1, 0.4)), mix=0.5))
        words.append("chorused")
    elif kind == "tonal" and maybe(0.15):
        plugins.append(Phaser(rate_hz=_synced(float(rng.uniform(0.2, 1.5)), loop_seconds), mix=0.5))
        words.append("phased")
    if kind != "drums" and maybe(0.35):
        plugins.append(Delay(delay_seconds=float(rng.choice([0.125, 0.1875, 0.25, 0.375])),
                             feedback=float(rng.uniform(0.2, 0.5)), mix=float(rng.uniform(0.15, 0.35))))
        words.append("echoing")
    if maybe(0.55):
        size = float(rng.uniform(0.2, 0.9))
        plugins.append(Reverb(room_size=size, damping=float(rng.uniform(0.2, 0.8)),
                              wet_level=float(rng.uniform(0.1, 0.35)), dry_level=0.8, width=1.0))
        words.append("spacious" if size > 0.6 else "roomy")
    return Pedalboard(plugins), words


def apply_loop(board: Pedalboard, audio: np.ndarray) -> np.ndarray:
    """Process a loop so the result is periodic: the effects first hear the loop's own end repeated for
    EFFECT_MEMORY_SECONDS (their memory then holds what it would in endless playback), then the loop."""
    if len(board) == 0:
        return audio
    n = audio.shape[1]
    total = n + int(EFFECT_MEMORY_SECONDS * SAMPLE_RATE)
    lead_in = np.tile(audio, (1, -(-total // n)))[:, -total:]
    return board(np.ascontiguousarray(lead_in, dtype=np.float32), SAMPLE_RATE, reset=True)[:, -n:]


def apply_once(board: Pedalboard, audio: np.ndarray) -> np.ndarray:
    """Process a one-shot, keeping its length (tails beyond the end are cut; callers leave room)."""
    if len(board) == 0:
        return audio
    return board(audio.astype(np.float32), SAMPLE_RATE, reset=True)[:, : audio.shape[1]]
