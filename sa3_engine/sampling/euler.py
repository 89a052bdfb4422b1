"""Euler sampling of the flow ODE, the default for base (``rectified_flow``) models."""

from __future__ import annotations

import torch

from sa3_engine.sampling.schedules import Callback, Model, Noise, column, per_item


def sample_euler(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """x <- x + (t_{i+1} - t_i) v(x, t_i) for each step; x and t stay float32 whatever the model's dtype.

    Deterministic: ``noise`` is accepted only so every sampler shares one signature.
    """
    x = x.float()  # the model casts its input: a half-precision state would round away the small steps
    t = per_item(sigmas, x.shape[0]).to(device=x.device, dtype=torch.float32)
    n = t.shape[1] - 1
    for i in range(n):
        t_now = t[:, i]
        v = model(x, t_now)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "t": t_now, "denoised": x - column(t_now, x) * v})
        x = x + column(t[:, i + 1] - t_now, x) * v
    return x
