"""One sampler run (a *window*): its inputs and what it returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sa3_engine.models.conditioners import DiTConditioning

Text = tuple[torch.Tensor, torch.Tensor]  # (B, S, D) text-encoder output, (B, S) attention mask (1 = token)


@dataclass
class Window:
    """The inputs of one sampler run (one official generate() call), text already encoded."""

    text: Text
    seconds: list[float]  # per item: conditioning, lengths, masks
    steps: int
    sampler: str = "pingpong"
    cfg_scale: float = 1.0
    apg_scale: float = 1.0
    cfg_interval: tuple[float, float] = (0.0, 1.0)  # guidance only while low <= t <= high
    cfg_norm_threshold: float = 0.0  # > 0: limit the guidance difference's norm to this
    negative_text: Text | None = None
    source: np.ndarray | None = None  # (channels, n) float32 at the model rate: what inpainting keeps
    regions: Sequence[tuple[int, int]] = ()  # sample ranges of ``source`` to regenerate
    init: np.ndarray | None = None  # (channels, n) float32 at the model rate: audio-to-audio start
    init_noise_level: float = 1.0
    padding_mode: str = "mask"


@dataclass
class Sampled:
    """A window's result and the tensors it was made from."""

    latents: torch.Tensor  # (B, C, T)
    sigmas: torch.Tensor  # (B, steps + 1)
    padding_mask: torch.Tensor  # (B, T) bool
    cond: DiTConditioning
    negative: DiTConditioning | None
    inpaint_mask: torch.Tensor  # (B, 1, T)
    source_latents: torch.Tensor | None  # (1, C, T)
    masked_input: torch.Tensor  # (B, C, T)
    samples: int
