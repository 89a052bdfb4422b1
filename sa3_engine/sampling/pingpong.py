"""Ping-pong sampling, the default for post-trained (``rf_denoiser``) models.

Each step jumps to the denoised estimate and re-noises it to the next time with fresh noise:
x <- (1 - t_{i+1}) (x - t_i v) + t_{i+1} eps_i. The last step has t = 0, so its noise is multiplied
by zero, but it is still drawn: the official sampler does, and skipping it would shift the random
stream of anything drawn afterwards.
"""

from __future__ import annotations

import torch

from sa3_engine.sampling.schedules import Callback, Model, Noise, column, per_item


def randn_noise(generator: torch.Generator | None = None) -> Noise:
    """Standard normal draws from ``generator`` (the global RNG of ``like``'s device if None), returned
    with the dtype and device of ``like``.

    A generator draws on its own device, then the draw moves to ``like``'s: a CPU generator seeded with
    s, used first for the initial noise and then here, reproduces the official ``torch.manual_seed(s)``
    stream (initial noise, then one ``randn_like`` per step) whichever device the sampler runs on.
    """

    def draw(step: int, like: torch.Tensor) -> torch.Tensor:
        device = like.device if generator is None else generator.device
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=device).to(like.device)

    return draw


def sample_pingpong(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run the ping-pong sampler from x at sigmas[..., 0] down to sigmas[..., -1].

    x and t stay float32 whatever the model's dtype. (The official sampler runs in the model dtype, so
    under float16 it rounds t to fp16 in this update too; the DiT keeps that rounding where it matters,
    before the timestep's Fourier features.)
    """
    if noise is None:
        noise = randn_noise()
    x = x.float()
    t = per_item(sigmas, x.shape[0]).to(device=x.device, dtype=torch.float32)
    n = t.shape[1] - 1
    for i in range(n):
        t_now, t_next = t[:, i], column(t[:, i + 1], x)
        denoised = x - column(t_now, x) * model(x, t_now)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "t": t_now, "denoised": denoised})
        x = (1 - t_next) * denoised + t_next * noise(i, x)
    return x
