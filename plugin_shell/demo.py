"""``sa3 demo``: the main job. A loop generated and placed through the whole stack.

engine process (``sa3 serve``) <- protocol v2 <- ``EngineClient`` <- ``PluginShell`` <- offline host:
an arrangement with a source track at the host's tempo and rate gets a new track holding an
N-bar seamless loop from the engine; the arrangement is then rendered to a mixdown. Files already in
the output folder are never overwritten unless ``--force``: new ones get the next free name.
"""

from __future__ import annotations

import numpy as np

from bridge.timeline import TempoMap

TINY_WARNING = (
    "NOTE: no trained default model ships yet, so this demo runs on 'tiny-random', a tiny model with\n"
    "      RANDOM weights. Every part of the stack is real, but the audio is noise-like, not music.\n"
    "      With released weights on disk, run: sa3 demo --model small-music"
)


def source_track(tempo_map: TempoMap, bars: int, rate: int) -> np.ndarray:
    """A stand-in for the producer's own track: a decaying 55 Hz pulse on every beat."""
    end = tempo_map.bar_to_sample(bars, rate)
    audio = np.zeros((2, end), np.float32)
    meter = tempo_map.meter_at(0)
    for beat in range(bars * meter.numerator):
        start = tempo_map.bar_to_sample(beat / meter.numerator, rate)
        n = min(end - start, rate // 4)
        t = np.arange(n) / rate
        audio[:, start : start + n] += (0.5 * np.sin(2 * np.pi * 55 * t) * np.exp(-t * 12)).astype(np.float32)
    return audio
