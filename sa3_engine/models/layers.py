"""Small building blocks shared by the SAME autoencoder and the diffusion transformer.

Parameter names follow the official checkpoints (``gamma``, ``alpha``, ``beta``, ``inv_freq``,
``ff.0.proj``, ``weight_g``/``weight_v``) so state dicts load without renaming.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """gamma * x / sqrt(mean(x^2) + eps), no bias (what ``F.rms_norm`` computes)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.gamma, self.eps)


class DynamicTanh(nn.Module):
    """gamma * tanh(alpha * x) + beta with a scalar alpha; no statistics, no eps."""

    def __init__(self, dim: int, init_alpha: float = 4.0):
        super().__init__()
        self.alpha = nn.Parameter(torch.full((1,), init_alpha))
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * torch.tanh(self.alpha * x) + self.beta


NORM_KINDS = ("rms", "rms_norm", "dyt", "dynamic_tanh")  # the official names make_norm accepts


def make_norm(kind: str, dim: int, eps: float = 1e-5) -> nn.Module:
    if kind in ("rms", "rms_norm"):
        return RMSNorm(dim, eps)
    if kind in ("dyt", "dynamic_tanh"):
        return DynamicTanh(dim)
    raise ValueError(f"unknown norm kind {kind!r} (expected one of {NORM_KINDS})")


ROTARY_BUFFER = "inv_freq"


def rotary_dtype(model_dtype: torch.dtype) -> torch.dtype:
    """The dtype a loaded ``inv_freq`` table keeps in a module of ``model_dtype``.

    float16 only under float16: the official ``model_half`` cast rounds the persistent tables to fp16
    (REFERENCE 13.6) and we match that quirk. Anything else keeps float32; a bfloat16 table would be off
    by up to ~0.7 rad at 4160 positions, a quirk the official code never has.
    """
    return torch.float16 if model_dtype == torch.float16 else torch.float32


class Rotary(nn.Module):
    """Partial rotary embedding of the first ``dim_rot`` head dims.

    ``dim_rot`` comes from the config; the buffer is persistent because the checkpoints carry it, and
    strict loading rejects a stored table of another length.
    """

    def __init__(self, dim_rot: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim_rot, 2, dtype=torch.float32) / dim_rot))
        self.register_buffer(ROTARY_BUFFER, inv_freq, persistent=True)

    def angles(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (N, d_rot/2) in float32, for integer positions (N,)."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq.to(torch.float32)[None, :]
        return freqs.cos(), freqs.sin()

    def angles_for_length(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.angles(torch.arange(n, device=self.inv_freq.device))


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first 2*cos.shape[-1] dims of x (..., N, D) with the half-split (NeoX) layout, in fp32."""
    half = cos.shape[-1]
    rot, rest = x[..., : 2 * half].to(torch.float32), x[..., 2 * half :]
    a, b = rot[..., :half], rot[..., half:]
    rotated = torch.cat((a * cos - b * sin, b * cos + a * sin), dim=-1).to(x.dtype)
    return torch.cat((rotated, rest), dim=-1) if rest.shape[-1] else rotated


class GLU(nn.Module):
    """proj -> (value, gate) halves -> value * act(gate)."""

    def __init__(self, dim: int, inner: int, activation: str = "silu"):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        if self.activation == "sin":
            return value * torch.sin(3.14159265359 * gate)
        return value * F.silu(gate)


class FeedForward(nn.Module):
    """SwiGLU (or sin-gated) feed-forward; the Identity keeps the official ``ff.2`` index for the output Linear."""

    def __init__(self, dim: int, inner: int, activation: str = "silu"):
        super().__init__()
        self.ff = nn.Sequential(GLU(dim, inner, activation), nn.Identity(), nn.Linear(inner, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ff(x)


class WNConv1d(nn.Module):
    """Conv1d with legacy weight normalisation (``weight_g`` (out,1,1), ``weight_v`` (out,in,k)); 'same' padding."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 1, bias: bool = True):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_channels, 1, 1))
        self.weight_v = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size))
        nn.init.kaiming_uniform_(self.weight_v, a=math.sqrt(5))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.padding = kernel_size // 2

    @property
    def weight(self) -> torch.Tensor:
        v = self.weight_v
        return self.weight_g * v / v.norm(dim=(1, 2), keepdim=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv1d(x, self.weight, self.bias, padding=self.padding)
