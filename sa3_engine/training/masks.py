"""Per-item masks of stage 1: the silence extension of the valid length, and inpainting masks.

Inpainting masks use the model's convention, 1 = keep (context given to the model), 0 = generate. Types,
drawn per item with the official probabilities: full generation 80 %, random segments 10 % (1..10 segments,
each at most L/count long, regenerated inside kept audio), causal 10 % (keep a random prefix, generate the
rest: continuation). Positions past an item's valid length are always 0.
"""

from __future__ import annotations

import torch

MASK_TYPES = ("full", "segments", "causal")
DEFAULT_MASK_PROBS = (0.8, 0.1, 0.1)
MAX_SEGMENTS = 10


def silence_extension(valid: torch.Tensor, limit: int, mean_frames: float, generator: torch.Generator) -> torch.Tensor:
    """(B,) valid lengths extended by Exponential(mean) frames of silence, clamped to ``limit``.

    The official silence augmentation: the model attends to (and is trained on) some silence after the
    clip's end, so it learns to end cleanly.
    """
    if mean_frames <= 0:
        return valid.clamp(max=limit)
    u = torch.rand(valid.shape, generator=generator, dtype=torch.float64)
    extra = torch.floor(-torch.log1p(-u) * mean_frames).to(torch.int64)
    return (valid + extra).clamp(max=limit)


def lengths_mask(lengths: torch.Tensor, frames: int) -> torch.Tensor:
    """(B, frames) bool: True for the first lengths[i] frames of item i."""
    return torch.arange(frames)[None, :] < lengths[:, None]


def _randint(low: int, high: int, generator: torch.Generator) -> int:
    """An integer in [low, high] inclusive."""
    return int(torch.randint(low, high + 1, (1,), generator=generator))


def segments_mask(length: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Keep everything but 1..10 random (possibly overlapping) segments of at most length/count frames."""
    mask = torch.zeros(frames)
    mask[:length] = 1
    count = _randint(1, min(MAX_SEGMENTS, length), generator)
    for _ in range(count):
        size = _randint(1, max(1, length // count), generator)
        start = _randint(0, length - size, generator)
        mask[start : start + size] = 0
    return mask


def causal_mask(length: int, frames: int, generator: torch.Generator) -> torch.Tensor:
    """Keep a prefix of 1 .. length-1 frames, generate the rest (a one-frame item is generated whole)."""
    mask = torch.zeros(frames)
    if length > 1:
        mask[: _randint(1, length - 1, generator)] = 1
    return mask


def inpaint_masks(lengths: torch.Tensor, frames: int, generator: torch.Generator,
                  probs: tuple[float, float, float] = DEFAULT_MASK_PROBS) -> tuple[torch.Tensor, list[str]]:
    """(B, 1, frames) float masks (1 = keep) for items of the given valid lengths, and each item's type."""
    if len(probs) != len(MASK_TYPES) or min(probs) < 0 or sum(probs) <= 0:
        raise ValueError(f"mask probabilities: expected 3 non-negative numbers (full, segments, causal), got {probs}")
    choice = torch.multinomial(torch.tensor(probs, dtype=torch.float64), len(lengths), replacement=True,
                               generator=generator)
    masks, kinds = [], []
    for length, kind in zip(lengths.tolist(), choice.tolist(), strict=True):
        name = MASK_TYPES[kind]
        if name == "segments" and length > 0:
            masks.append(segments_mask(length, frames, generator))
        elif name == "causal":
            masks.append(causal_mask(length, frames, generator))
        else:
            masks.append(torch.zeros(frames))
        kinds.append(name)
    return torch.stack(masks)[:, None, :], kinds
