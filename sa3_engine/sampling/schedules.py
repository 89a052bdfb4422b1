"""Noise schedules: distribution shifts and the official schedule construction.

Time runs from 1 (noise) to 0 (data). A shift warps a grid ``u`` of shape (N,) given per-item
effective latent lengths ``lengths`` of shape (B,) into a (B, N) schedule; with ``lengths=None`` it
returns an (N,) schedule and refuses if its result would depend on the length. The maths follows
the official per-item (tensor) code path op for op in float32, because ``generate`` always builds
the schedule from per-item lengths and t feeds ill-conditioned Fourier features (one ulp matters).

Keyword names equal the official config keys, so ``sampling_distribution_shift_options`` dicts
pass straight through (:func:`sampling_shift`). The sampler-facing types (``Model``, ``Callback``,
``Noise``) and the two ways samplers read a schedule (:func:`per_item`, :func:`column`) live here too.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from functools import partial

import torch

from sa3_engine.models.config import ConfigError, diffusion_block

Shift = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]  # shift(u (N,), lengths (B,) | None)

# What samplers are given: the velocity model, and the per-step hooks.
Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # model(x (B, ...), t (B,)) -> v = eps - x0
Callback = Callable[[dict], None]  # gets {"i", "n", "x", "t", "denoised"}; raising stops the sampler
Noise = Callable[[int, torch.Tensor], torch.Tensor]  # noise(step, like) -> a fresh N(0, 1) tensor like `like`


def _grid(u: torch.Tensor, per_item: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """u (N,) and a per-item value (B,) shaped to broadcast to (B, N)."""
    return u.unsqueeze(0), per_item.unsqueeze(1)


def _needs_lengths(name: str) -> ValueError:
    return ValueError(f"the {name} shift depends on the sequence length: pass lengths")


def identity_shift(u: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """No warp: the linear grid (per item if lengths are given)."""
    return u if lengths is None else u.unsqueeze(0).expand(len(lengths), -1).clone()


def logsnr_shift(
    u: torch.Tensor,
    lengths: torch.Tensor | None,
    *,
    anchor_length: float = 2000,
    anchor_logsnr: float = -6.2,
    rate: float = 1.0,
    logsnr_end: float = 2.0,
) -> torch.Tensor:
    """Uniform spacing in l = log((1-t)/t) from l_start (u = 1) to logsnr_end (u = 0), exact endpoints.

    l_start = anchor_logsnr - rate * log2(L / anchor_length): longer items start noisier.
    """
    if lengths is None:
        if rate != 0:
            raise _needs_lengths("logsnr (rate != 0)")
        # the float32 value the per-item path produces when rate is 0
        start = torch.tensor(anchor_logsnr, dtype=torch.float32, device=u.device)
        uu = u
    else:
        start = anchor_logsnr - rate * torch.log2(lengths.float() / anchor_length)
        uu, start = _grid(u, start)
    t = torch.sigmoid(-(logsnr_end - uu * (logsnr_end - start)))
    t = torch.where(u <= 0, torch.zeros_like(t), t)
    return torch.where(u >= 1, torch.ones_like(t), t)


def full_shift(
    u: torch.Tensor,
    lengths: torch.Tensor | None,
    *,
    base_shift: float = 0.5,
    max_shift: float = 1.15,
    max_length: float = 4096,
    min_length: float = 256,
    use_sine: bool = False,
) -> torch.Tensor:
    """t' = 1 - e^mu / (e^mu + 1/(1-t) - 1), mu = -(base + (max - base) * (L - Lmin)/(Lmax - Lmin)), L clamped."""
    if lengths is None:
        raise _needs_lengths("full")
    length = lengths.float().clamp(min_length, max_length)
    uu, length = _grid(u, length)
    mu = -(base_shift + (max_shift - base_shift) * (length - min_length) / (max_length - min_length))
    t = 1 - torch.exp(mu) / (torch.exp(mu) + (1 / (1 - uu) - 1))
    return torch.sin(t * math.pi / 2) if use_sine else t


def flux_shift(
    u: torch.Tensor,
    lengths: torch.Tensor | None,
    *,
    min_length: float = 256,
    max_length: float = 4096,
    alpha_min: float = 1.0,
    alpha_max: float = 1.0,
) -> torch.Tensor:
    """t' = a t / (1 + (a - 1) t), log a linear in log L between (min_length, alpha_min) and (max_length, alpha_max)."""
    if lengths is None:
        raise _needs_lengths("flux")
    log_min, log_max = math.log(min_length), math.log(max_length)
    if log_max == log_min:
        log_max += 1e-8  # constant alpha: avoid 0/0, as the official class does
    log_alpha_min, log_alpha_max = math.log(max(alpha_min, 1e-8)), math.log(max(alpha_max, 1e-8))
    frac = (torch.log(lengths.float().clamp(min_length, max_length)) - log_min) / (log_max - log_min)
    alpha = torch.exp(log_alpha_min + frac * (log_alpha_max - log_alpha_min))
    uu, alpha = _grid(u, alpha)
    return alpha * uu / (1 + (alpha - 1.0) * uu)


SHIFTS: dict[str, Callable[..., torch.Tensor]] = {
    "none": identity_shift,
    "logsnr": logsnr_shift,
    "full": full_shift,
    "flux": flux_shift,
}

# What the official wrapper samples with when sampling_distribution_shift_options is null.
DEFAULT_SAMPLING_SHIFT: Shift = partial(logsnr_shift, rate=0.0, anchor_logsnr=-6.2, logsnr_end=2.0)


def shift_from_options(options: dict | None, where: str = "sampling_distribution_shift_options") -> Shift:
    """A shift from an official options dict (``type`` defaults to "full"); None -> the default."""
    if options is None:
        return DEFAULT_SAMPLING_SHIFT
    if not isinstance(options, dict):
        raise ConfigError(f"config field {where} must be an object or null")
    kind = options.get("type", "full")
    if kind not in SHIFTS:
        raise ConfigError(
            f"config field {where}.type: unknown shift {kind!r} (expected one of {sorted(SHIFTS)})"
        )
    fn = SHIFTS[kind]
    allowed = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    kwargs = {k: v for k, v in options.items() if k != "type"}
    for key in kwargs:
        if key not in allowed:
            raise ConfigError(f"config field {where}.{key} is not an option of the {kind!r} shift {allowed}")
    return partial(fn, **kwargs) if kwargs else fn


def sampling_shift(config: dict) -> Shift:
    """The sampling shift of a full model config (``model.diffusion.sampling_distribution_shift_options``)."""
    options = diffusion_block(config).get("sampling_distribution_shift_options")
    return shift_from_options(options, "model.diffusion.sampling_distribution_shift_options")


def build_schedule(
    steps: int,
    sigma_max: float = 1.0,
    lengths: Sequence[float] | torch.Tensor | None = None,
    shift: Shift = identity_shift,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """float32 sigmas: (B, steps+1) for per-item effective lengths, else (steps+1,).

    linspace(sigma_max, 0, steps+1), warped by ``shift`` with each item's length (clamped to >= 1),
    then the first entry forced back to sigma_max. With sigma_max < 1 a shift may put the second
    entry above sigma_max; that is the official behaviour (the sampler re-noises). Unlike the
    official code, a batch of exactly steps+1 items still gets one row per item.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 < sigma_max <= 1:
        raise ValueError(f"sigma_max must be in (0, 1], got {sigma_max!r}")
    u = torch.linspace(sigma_max, 0, steps + 1, device=device)
    if lengths is not None:
        lengths = torch.as_tensor(lengths, dtype=torch.float32, device=device)
        if lengths.ndim != 1 or len(lengths) == 0:
            raise ValueError(f"lengths must be a non-empty 1-D sequence, got shape {tuple(lengths.shape)}")
        lengths = lengths.clamp(min=1)
    sigmas = shift(u, lengths)
    sigmas[..., 0] = sigma_max
    return sigmas


def per_item(sigmas: torch.Tensor, batch: int) -> torch.Tensor:
    """A (batch, N+1) view of a global (N+1,) or per-item (B, N+1) schedule."""
    if sigmas.ndim == 1:
        sigmas = sigmas.unsqueeze(0).expand(batch, -1)
    if sigmas.ndim != 2 or sigmas.shape[0] != batch or sigmas.shape[1] < 2:
        raise ValueError(
            f"sigmas must be (steps+1,) or ({batch}, steps+1) with steps >= 1, got {tuple(sigmas.shape)}"
        )
    return sigmas


def column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-item values (B,) shaped to broadcast against x (B, ...)."""
    return t.view(-1, *([1] * (x.ndim - 1)))
