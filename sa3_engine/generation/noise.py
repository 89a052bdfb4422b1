"""Seeded noise for one window: each batch item draws from its own generator, as when it runs alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class SeededNoise:
    """Random draws for one window, each item from its own generator.

    An item's draws (the initial noise, then one per sampler step) have the shape of the item's own
    window, (1, C, own frames), whatever the batch: a batched item therefore gets the same numbers as
    when it runs alone, and the frames the batch adds past its own window are zeros. Those frames are
    padding, so under true masking ("mask") batching does not change an item's result beyond floating-point
    rounding (batched kernels may sum in another order). A CPU generator seeded with s reproduces the
    official ``torch.manual_seed(s); torch.randn(...)`` stream, so a single item matches the official code
    draw for draw.
    """

    generators: list[torch.Generator]
    frames: list[int]

    @classmethod
    def from_seeds(cls, seeds: Sequence[int], frames: Sequence[int]) -> SeededNoise:
        return cls([torch.Generator().manual_seed(int(s)) for s in seeds], list(frames))

    def _draw(self, channels: int, total: int) -> torch.Tensor:
        parts = []
        for generator, own in zip(self.generators, self.frames, strict=True):
            own = min(own, total)
            parts.append(F.pad(torch.randn((1, channels, own), generator=generator), (0, total - own)))
        return torch.cat(parts)

    def initial(self, shape: tuple[int, int, int]) -> torch.Tensor:
        return self._draw(shape[1], shape[2])

    def __call__(self, step: int, like: torch.Tensor) -> torch.Tensor:
        return self._draw(like.shape[1], like.shape[2]).to(device=like.device, dtype=like.dtype)

