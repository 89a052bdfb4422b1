"""The one result type of a generation, whoever made it: the in-process pipeline, the engine (through the
client) or a shell backend. Plain values, no torch, so every layer can import it."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Generation:
    """One generated clip.

    ``audio`` is float32 (channels, samples) at ``sample_rate``, in [-1, 1]; it is None when the engine
    wrote the clip to ``path`` instead of sending it. ``params`` holds every parameter that made it (the
    sidecar's content), ``timings`` the seconds spent per stage.
    """

    audio: np.ndarray | None
    sample_rate: int
    seed: int
    params: dict
    timings: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def metadata(self) -> dict:
        """What a sidecar records: the parameters, the seed and the timings."""
        return {**self.params, "seed": self.seed, "timings": self.timings}
