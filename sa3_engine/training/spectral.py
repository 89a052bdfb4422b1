"""Reconstruction losses and metrics of the autoencoder stage: multi-resolution STFT and SI-SDR.

The SAME paper's STFT loss: 7 resolutions (FFT 32 .. 2048, hop n/4), pre-emphasis before the STFT, computed
on left/right and again on mid/side. Per resolution we use spectral convergence (||S - S_hat||_F / ||S||_F)
plus the L1 distance of log magnitudes. Substitutions, stated: a first-order pre-emphasis (1 - 0.85 z^-1)
stands in for K-weighting, and the phase (IFGD) term is left out.
"""

from __future__ import annotations

import torch

FFT_SIZES = (32, 64, 128, 256, 512, 1024, 2048)
PRE_EMPHASIS = 0.85
_EPS = 1e-5


def pre_emphasis(audio: torch.Tensor, coefficient: float = PRE_EMPHASIS) -> torch.Tensor:
    """y[n] = x[n] - c x[n-1] along the last axis (x[-1] = 0): tilts the loss towards the highs."""
    if coefficient == 0:
        return audio
    return torch.cat([audio[..., :1], audio[..., 1:] - coefficient * audio[..., :-1]], dim=-1)


def mid_side(audio: torch.Tensor) -> torch.Tensor:
    """(B, 2, N) left/right -> (B, 2, N) mid = (L + R)/2, side = (L - R)/2."""
    left, right = audio[:, 0], audio[:, 1]
    return torch.stack([(left + right) / 2, (left - right) / 2], dim=1)


def magnitude(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    """|STFT| of every channel: (B * C, n_fft/2 + 1, frames), Hann window, hop n_fft/4, centred."""
    flat = audio.reshape(-1, audio.shape[-1])
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True)
    return spec.abs()


def stft_distance(target: torch.Tensor, estimate: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Spectral convergence + mean |log|S| - log|S_hat||| at one resolution."""
    s, s_hat = magnitude(target, n_fft), magnitude(estimate, n_fft)
    convergence = torch.linalg.norm(s - s_hat) / torch.linalg.norm(s).clamp(min=_EPS)
    log_l1 = (torch.log(s + _EPS) - torch.log(s_hat + _EPS)).abs().mean()
    return convergence + log_l1


def multi_resolution_stft(target: torch.Tensor, estimate: torch.Tensor, fft_sizes=FFT_SIZES,
                          coefficient: float = PRE_EMPHASIS) -> torch.Tensor:
    """The mean over resolutions of ``stft_distance``, on pre-emphasised audio of any shape (..., N)."""
    target, estimate = pre_emphasis(target, coefficient), pre_emphasis(estimate, coefficient)
    usable = [n for n in fft_sizes if n <= target.shape[-1]] or [min(fft_sizes)]
    return sum(stft_distance(target, estimate, n) for n in usable) / len(usable)


def stereo_stft_loss(target: torch.Tensor, estimate: torch.Tensor, fft_sizes=FFT_SIZES) -> torch.Tensor:
    """The multi-resolution STFT loss on left/right plus the same on mid/side, for (B, 2, N) audio."""
    return (multi_resolution_stft(target, estimate, fft_sizes)
            + multi_resolution_stft(mid_side(target), mid_side(estimate), fft_sizes))


def si_sdr(target: torch.Tensor, estimate: torch.Tensor) -> torch.Tensor:
    """Scale-invariant SDR in dB per signal over the last axis: 10 log10(|a s|^2 / |a s - s_hat|^2),
    a = <s_hat, s>/|s|^2 (means removed first)."""
    s = target - target.mean(dim=-1, keepdim=True)
    s_hat = estimate - estimate.mean(dim=-1, keepdim=True)
    scale = (s_hat * s).sum(-1, keepdim=True) / (s * s).sum(-1, keepdim=True).clamp(min=1e-12)
    projection = scale * s
    noise = s_hat - projection
    ratio = (projection**2).sum(-1).clamp(min=1e-12) / (noise**2).sum(-1).clamp(min=1e-12)
    return 10 * torch.log10(ratio)
