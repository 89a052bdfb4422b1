"""The optional adversary of the autoencoder stage: small 2-D conv nets on log spectrograms at a few
resolutions (the SAME paper leaves its discriminator undescribed), with a relativistic loss and feature
matching on their intermediate activations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sa3_engine.training.spectral import magnitude, mid_side

DISCRIMINATOR_FFTS = (256, 512, 1024)


class SpectrogramCritic(nn.Module):
    """log|STFT| of L, R, M, S as 4 input planes -> conv stack -> a map of logits, and every activation."""

    def __init__(self, n_fft: int, width: int = 16, depth: int = 3):
        super().__init__()
        self.n_fft = n_fft
        layers, channels = [], 4
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, (3, 3), stride=(2, 1), padding=1))
            channels = width
        self.layers = nn.ModuleList(layers)
        self.out = nn.Conv2d(width, 1, (3, 3), padding=1)

    def forward(self, audio: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        planes = torch.cat([audio, mid_side(audio)], dim=1)
        x = torch.log(magnitude(planes, self.n_fft) + 1e-5)  # (B, 4, F, frames)
        features = []
        for layer in self.layers:
            x = F.leaky_relu(layer(x), 0.2)
            features.append(x)
        return self.out(x), features


class AudioDiscriminator(nn.Module):
    def __init__(self, ffts=DISCRIMINATOR_FFTS):
        super().__init__()
        self.critics = nn.ModuleList(SpectrogramCritic(n) for n in ffts)

    def forward(self, audio: torch.Tensor) -> list[tuple[torch.Tensor, list[torch.Tensor]]]:
        return [critic(audio) for critic in self.critics]


def relativistic(first: list, second: list) -> torch.Tensor:
    """mean softplus(-(D(first) - D(second))): low when the critics score ``first`` above ``second``."""
    return sum(F.softplus(-(a.mean(dim=(1, 2, 3)) - b.mean(dim=(1, 2, 3)))).mean()
               for (a, _), (b, _) in zip(first, second, strict=True)) / len(first)


def feature_matching(real: list, fake: list) -> torch.Tensor:
    """Mean L1 between the critics' activations on real and reconstructed audio."""
    pairs = [(r, f) for (_, rs), (_, fs) in zip(real, fake, strict=True) for r, f in zip(rs, fs, strict=True)]
    return sum((r.detach() - f).abs().mean() for r, f in pairs) / len(pairs)
