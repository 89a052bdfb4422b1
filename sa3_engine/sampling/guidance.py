"""Classifier-free guidance with adaptive projected guidance (APG), around a conditional DiT.

:func:`guided_model` turns a raw ``dit(x, t, cross, global_, local, padding_mask) -> v`` into the
``model(x, t) -> v`` every sampler takes. When guidance is active it runs one batched pass
[cond; uncond] and combines the two in denoised space:

    D_c = x - t v_c,  D_u = x - t v_u,  delta = D_c - D_u
    D = D_c + (cfg - 1) delta',  v = (x - D) / t

where delta' is delta (optionally norm-limited), its part orthogonal to D_c (APG), or a blend.
All of this runs in float32, as in the official code.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from sa3_engine.sampling.schedules import Model, column

Dit = Callable[..., torch.Tensor]  # dit(x, t, cross, global_, local, padding_mask) -> v


def uncond_context(
    cross: torch.Tensor, negative: torch.Tensor | None = None, negative_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The unconditional cross-attention context.

    Without a negative prompt: zeros for the whole context, duration token included. With one: its
    context (B, S, D), with every position where ``negative_mask`` (B, S) is 0 set to zero, not to
    the learned padding embedding.
    """
    if negative is None:
        return torch.zeros_like(cross)
    if negative.shape != cross.shape:
        raise ValueError(
            f"negative context shape {tuple(negative.shape)} != context shape {tuple(cross.shape)}"
        )
    if negative_mask is None:
        return negative
    if negative_mask.shape != negative.shape[:2]:
        raise ValueError(
            f"negative_mask shape {tuple(negative_mask.shape)} must be {tuple(negative.shape[:2])}"
        )
    return torch.where(negative_mask.bool().unsqueeze(2), negative, torch.zeros_like(negative))


def _valid(padding_mask: torch.Tensor | None) -> torch.Tensor | None:
    """padding_mask (B, T), True = valid, as a float32 (B, 1, T) multiplier."""
    return None if padding_mask is None else padding_mask.unsqueeze(1).float()


def orthogonal_part(
    delta: torch.Tensor, direction: torch.Tensor, padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The part of delta (B, C, T) orthogonal to direction, per item over (C, T), in float32.

    Under a padding mask only valid frames define the direction and its norm, and the result is
    zero on padding. The projection coefficient uses delta unmasked; that makes no difference
    because the unit direction is zero on padding.
    """
    dtype = delta.dtype
    delta, direction = delta.float(), direction.float()
    mask = _valid(padding_mask)
    # official epsilons: F.normalize's 1e-12 without a mask, 1e-8 with one
    if mask is None:
        masked, eps = direction, 1e-12
    else:
        masked, eps = direction * mask, 1e-8
    unit = masked / masked.norm(dim=[-1, -2], keepdim=True).clamp(min=eps)
    orthogonal = delta - (delta * unit).sum(dim=[-1, -2], keepdim=True) * unit
    return (orthogonal if mask is None else orthogonal * mask).to(dtype)


def guide(
    cond_denoised: torch.Tensor,
    uncond_denoised: torch.Tensor,
    *,
    cfg_scale: float,
    apg_scale: float = 1.0,
    norm_threshold: float = 0.0,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """The guided denoised estimate D_c + (cfg - 1) delta' (float32 inputs)."""
    delta = cond_denoised - uncond_denoised
    if norm_threshold > 0:
        mask = _valid(padding_mask)
        norm = (delta if mask is None else delta * mask).norm(p=2, dim=[-1, -2], keepdim=True)
        delta = delta * torch.minimum(torch.ones_like(delta), norm_threshold / norm)
    if apg_scale == 0.0:
        guided = delta
    elif apg_scale == 1.0:
        guided = orthogonal_part(delta, cond_denoised, padding_mask)
    else:
        guided = apg_scale * orthogonal_part(delta, cond_denoised, padding_mask) + (1 - apg_scale) * delta
    return cond_denoised + (cfg_scale - 1) * guided


def _twice(value: torch.Tensor | None) -> torch.Tensor | None:
    return None if value is None else torch.cat([value, value], dim=0)


def guided_model(
    dit: Dit,
    cross: torch.Tensor,
    global_: torch.Tensor | None,
    local: torch.Tensor | None,
    padding_mask: torch.Tensor | None = None,
    *,
    uncond_cross: torch.Tensor | None = None,
    cfg_scale: float = 1.0,
    apg_scale: float = 1.0,
    cfg_interval: tuple[float, float] = (0.0, 1.0),
    cfg_norm_threshold: float = 0.0,
) -> Model:
    """``model(x, t) -> v`` with CFG/APG around ``dit``.

    Guidance is active when cfg_scale != 1 and cfg_interval[0] <= t[0] <= cfg_interval[1] (item 0
    decides for the batch, as in the official code); otherwise the DiT runs once on the
    conditional inputs. ``uncond_cross`` defaults to zeros (see :func:`uncond_context`); global,
    local conditioning and the padding mask are shared by both halves. Active guidance returns
    float32 velocities. Items at t = 0 get the conditional velocity: there the sampler ignores v.
    """
    if uncond_cross is None:
        uncond_cross = uncond_context(cross)
    if uncond_cross.shape != cross.shape:
        raise ValueError(
            f"uncond_cross shape {tuple(uncond_cross.shape)} != cross shape {tuple(cross.shape)}"
        )
    low, high = cfg_interval
    if not low <= high:
        raise ValueError(f"cfg_interval must be (low, high) with low <= high, got {cfg_interval!r}")

    batched: list = []  # [cond; uncond] conditioning, built once: the same tensors at every step

    def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.float()
        if cfg_scale == 1.0 or not bool((low <= t[0]) & (t[0] <= high)):
            return dit(x, t, cross, global_, local, padding_mask)
        if not batched:
            batched.extend((torch.cat([cross, uncond_cross], dim=0), _twice(global_), _twice(local),
                            _twice(padding_mask)))
        v = dit(_twice(x), _twice(t), *batched)
        v_cond, v_uncond = v.float().chunk(2, dim=0)
        xf, tt = x.float(), column(t, x)
        denoised = guide(
            xf - v_cond * tt,
            xf - v_uncond * tt,
            cfg_scale=cfg_scale,
            apg_scale=apg_scale,
            norm_threshold=cfg_norm_threshold,
            padding_mask=padding_mask,
        )
        positive = tt > 0
        return torch.where(positive, (xf - denoised) / torch.where(positive, tt, 1.0), v_cond)

    return model
