"""DPM-Solver++ (2M) for rectified flow.

With lambda(t) = log((1 - t)/t) and the denoised estimate D = x - t v, the first-order step is
x <- (t'/t) x - (1 - t') c D with c = (t' - t)/((1 - t') t) (= expm1(-h), computed directly so
t' = 0 is fine). Other steps replace D by the multistep extrapolation
(1 + 1/(2r)) D_i - 1/(2r) D_{i-1}, r = h_{i-1}/h_i. The first step and a step landing on t = 0 stay
first order. The schedule keeps its own dtype (float32), as in the official sampler.
"""

from __future__ import annotations

import torch

from sa3_engine.sampling.schedules import Callback, Model, Noise, column, per_item

_TINY = 1e-10  # keeps log/division finite at t = 0 and t = 1


def _lam(t: torch.Tensor) -> torch.Tensor:
    return ((1 - t).clamp(min=_TINY) / t.clamp(min=_TINY)).log()


def sample_dpmpp(
    model: Model,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise: Noise | None = None,
    callback: Callback | None = None,
) -> torch.Tensor:
    """Run DPM++ 2M from sigmas[..., 0] to sigmas[..., -1].

    Deterministic: ``noise`` is accepted only so every sampler shares one signature. x stays float32.
    """
    x = x.float()
    t = per_item(sigmas, x.shape[0]).to(device=x.device, dtype=torch.float32)
    n = t.shape[1] - 1
    previous = None
    for i in range(n):
        t_now = t[:, i]
        now, nxt = column(t_now, x), column(t[:, i + 1], x)
        denoised = x - now * model(x, t_now)
        if callback is not None:
            callback({"i": i, "n": n, "x": x, "t": t_now, "denoised": denoised})
        coeff = (nxt - now) / ((1 - nxt).clamp(min=_TINY) * now.clamp(min=_TINY))
        target = denoised
        if previous is not None and not bool((t[:, i + 1] == 0).all()):
            r = (_lam(now) - _lam(column(t[:, i - 1], x))) / (_lam(nxt) - _lam(now))
            target = (1 + 1 / (2 * r)) * denoised - (1 / (2 * r)) * previous
        x = (nxt / now.clamp(min=_TINY)) * x - (1 - nxt) * coeff * target
        previous = denoised
    return x
