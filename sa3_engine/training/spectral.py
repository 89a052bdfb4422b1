"""Reconstruction losses and metrics of the autoencoder stage: multi-resolution STFT and SI-SDR.

The SAME paper's STFT loss: 7 resolutions (FFT 32 .. 2048, hop n/4), pre-emphasis before the STFT, computed
on left/right and again on mid/side. Per resolution we use spectral convergence (||S - S_hat||_F / ||S||_F)
plus the L1 distance of log magnitudes, and optionally an IFGD phase term (instantaneous frequency and
group delay as unit phasors, magnitude-weighted; our reading of the paper's one-line description).
Substitution, stated: a first-order pre-emphasis (1 - 0.85 z^-1) stands in for K-weighting.
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


def mid_side(x: torch.Tensor) -> torch.Tensor:
    """Left/right on axis 1 (audio (B, 2, N) or spectra (B, 2, F, T)) -> mid = (L + R)/2, side = (L - R)/2."""
    left, right = x[:, 0], x[:, 1]
    return torch.stack([(left + right) / 2, (left - right) / 2], dim=1)


def spectrum(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    """Complex STFT of every channel: (..., n_fft/2 + 1, frames), Hann window, hop n_fft/4, centred."""
    flat = audio.reshape(-1, audio.shape[-1])
    window = torch.hann_window(n_fft, device=audio.device, dtype=audio.dtype)
    spec = torch.stft(flat, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True)
    return spec.reshape(*audio.shape[:-1], *spec.shape[-2:])


def magnitude(audio: torch.Tensor, n_fft: int) -> torch.Tensor:
    return spectrum(audio, n_fft).abs()


def spectral_distance(s: torch.Tensor, s_hat: torch.Tensor) -> torch.Tensor:
    """Spectral convergence + mean |log|S| - log|S_hat||| of two magnitude spectrograms.

    The convergence's denominator is floored at 1 (a batch of silent crops would otherwise divide by ~0)."""
    convergence = torch.linalg.norm(s - s_hat) / torch.linalg.norm(s).clamp(min=1.0)
    return convergence + (torch.log(s + _EPS) - torch.log(s_hat + _EPS)).abs().mean()


def _phasor(z: torch.Tensor) -> torch.Tensor:
    return z / (z.abs() + _EPS)


def phase_distance(s: torch.Tensor, s_hat: torch.Tensor) -> torch.Tensor:
    """Instantaneous frequency and group delay (IFGD) distance of two complex spectrograms (..., F, frames).

    The phase advance between neighbouring frames (instantaneous frequency) and neighbouring bins (group
    delay), each as a unit phasor z_k conj(z_{k-1}) / |.|, compared by |difference| and weighted by the
    target's magnitude (normalised to mean 1), so phase counts where there is energy. 0 when equal."""
    weight = s.abs()
    weight = weight / weight.mean().clamp(min=_EPS)
    total = 0.0
    for dim in (-1, -2):
        n = s.shape[dim]
        if n < 2:
            continue
        a = s.narrow(dim, 1, n - 1) * s.narrow(dim, 0, n - 1).conj()
        b = s_hat.narrow(dim, 1, n - 1) * s_hat.narrow(dim, 0, n - 1).conj()
        total = total + (weight.narrow(dim, 1, n - 1) * (_phasor(a) - _phasor(b)).abs()).mean()
    return total


def _usable(fft_sizes, length: int) -> list[int]:
    return [n for n in fft_sizes if n <= length] or [min(fft_sizes)]


def multi_resolution_stft(target: torch.Tensor, estimate: torch.Tensor, fft_sizes=FFT_SIZES,
                          coefficient: float = PRE_EMPHASIS) -> torch.Tensor:
    """The mean over resolutions of the spectral distance, on pre-emphasised audio of any shape (..., N)."""
    target, estimate = pre_emphasis(target, coefficient), pre_emphasis(estimate, coefficient)
    usable = _usable(fft_sizes, target.shape[-1])
    return sum(spectral_distance(magnitude(target, n), magnitude(estimate, n)) for n in usable) / len(usable)


def stereo_stft_loss(target: torch.Tensor, estimate: torch.Tensor, fft_sizes=FFT_SIZES,
                     phase_weight: float = 0.0) -> torch.Tensor:
    """The multi-resolution STFT loss on left/right plus the same on mid/side, for (B, 2, N) audio;
    ``phase_weight`` > 0 adds that much of the IFGD phase distance per resolution and pair.

    One STFT per resolution: mid/side spectra are the same linear mix of the left/right ones."""
    target, estimate = pre_emphasis(target), pre_emphasis(estimate)
    total = 0.0
    usable = _usable(fft_sizes, target.shape[-1])
    for n in usable:
        with torch.no_grad():
            s = spectrum(target, n)
        s_hat = spectrum(estimate, n)
        for a, b in ((s, s_hat), (mid_side(s), mid_side(s_hat))):
            total = total + spectral_distance(a.abs(), b.abs())
            if phase_weight > 0:
                total = total + phase_weight * phase_distance(a, b)
    return total / len(usable)


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
