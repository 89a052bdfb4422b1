"""Exponential Fourier features for the diffusion time and the duration, bit-exact with the official code.

Arguments reach ~6e4 rad, where one float32 ulp is ~4e-3 rad, so both the frequency table and the
operation order are part of the numerics: the table is torch float32
``exp(linspace(0, 1, n) * (ln fmax - ln fmin) + ln fmin)`` and the argument is ``((t * f) * 2) * pi``
in float32, cos half first. Do not "simplify" either expression.
"""

from __future__ import annotations

import math

import torch
from torch import nn

MIN_FREQ = 0.5
MAX_FREQ = 10000.0

# Range of the normalised logSNR timestep conditioning (official ``_t_to_logsnr_cond``).
_LOGSNR_MIN, _LOGSNR_MAX = -12.0, 5.0


def expo_freqs(n: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ, device=None) -> torch.Tensor:
    """The (n,) float32 frequency table, log-spaced from min_freq to max_freq."""
    ramp = torch.linspace(0, 1, n, device=device, dtype=torch.float32)
    log_min, log_max = math.log(min_freq), math.log(max_freq)
    return torch.exp(ramp * (log_max - log_min) + log_min)


def expo_fourier_features(
    t: torch.Tensor, dim: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ
) -> torch.Tensor:
    """[cos(2 pi t f), sin(2 pi t f)] for t of shape (B,) or (B, 1) -> (B, dim), in t's dtype.

    Computed in float32 whatever the input dtype (a half-precision t is rounded before, as officially).
    """
    if dim % 2:
        raise ValueError(f"Fourier feature dim must be even, got {dim}")
    in_dtype = t.dtype
    t = t.float()
    if t.dim() == 1:
        t = t[:, None]
    args = t * expo_freqs(dim // 2, min_freq, max_freq, device=t.device) * 2 * math.pi
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1).to(in_dtype)


class ExpoFourierFeatures(nn.Module):
    """Parameter-free module form, so it can sit inside an ``nn.Sequential`` with official indices."""

    def __init__(self, dim: int, min_freq: float = MIN_FREQ, max_freq: float = MAX_FREQ):
        super().__init__()
        self.dim, self.min_freq, self.max_freq = dim, min_freq, max_freq

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return expo_fourier_features(t, self.dim, self.min_freq, self.max_freq)


def logsnr_timestep(t: torch.Tensor) -> torch.Tensor:
    """t in [0, 1] -> normalised logSNR in [0, 1] (t=0 -> 0, t=1 -> 1), in t's dtype.

    logSNR = ln((1 - t) / t), clamped to [-12, 5], mapped by (5 - logSNR) / 17; t is clamped away from
    0 and 1 first so the log stays finite.
    """
    tc = t.float().clamp(1e-7, 1 - 1e-7)
    logsnr = torch.log((1 - tc) / tc).clamp(_LOGSNR_MIN, _LOGSNR_MAX)
    return ((_LOGSNR_MAX - logsnr) / (_LOGSNR_MAX - _LOGSNR_MIN)).to(t.dtype)
