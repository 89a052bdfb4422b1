"""The one attention function and the attention module used by every transformer here.

Padding semantics (see docs/architecture.md):
- ``"mask"`` (default): true masking. Padded keys take no part in the softmax; what padded queries
  compute never reaches valid positions. This is what the models were trained with and what the
  official GPU (flash-attn varlen) path does.
- ``"vzero"``: the official CPU path, kept for compatibility checks. Values at padded keys are zeroed
  but the keys stay in the softmax denominator, so valid outputs near padding differ slightly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from sa3_engine.models.layers import apply_rotary, make_norm

PADDING_MODES = ("mask", "vzero")

try:  # flash-attn is an optional GPU extra; SDPA is the fallback everywhere else.
    from flash_attn import flash_attn_varlen_func as _flash_varlen
except ImportError:  # pragma: no cover - depends on the machine
    _flash_varlen = None


def backend(device: torch.device | str) -> str:
    """Which kernel ``attend`` uses on this device (``device.describe``, so the engine's ``hello``)."""
    return "flash-attn" if _flash_varlen is not None and torch.device(device).type == "cuda" else "sdpa"


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    padding_mode: str = "mask",
    window: int | tuple[int, int] | None = None,
) -> torch.Tensor:
    """Scaled dot-product attention over (B, H, N, D) tensors.

    key_mask: (B, Nk) bool, True = valid key. window: if set, query i sees keys i - left <= j <= i + right
    (an int w means (w, w); self-attention only), computed blockwise so memory stays linear in N.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    if key_mask is not None and padding_mode == "vzero":
        v = v * key_mask[:, None, :, None].to(v.dtype)
        key_mask = None
    if window is not None:
        left, right = (window, window) if isinstance(window, int) else window
        return _banded(q, k, v, key_mask, left, right)
    if key_mask is not None and _flash_varlen is not None and q.is_cuda:
        return _flash_masked(q, k, v, key_mask)
    attn_mask = None if key_mask is None else key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)


_MIN_BAND_BLOCK = 64  # fewer, larger kernel calls for narrow windows


def _band_block(left: int, right: int) -> int:
    """Queries per block: the window's width, at least 64. A block then scores about twice the keys it
    needs, where 1024-query blocks scored ~30x for SAME-L's window.

    SAME-L (+-17 tokens) measured on CPU (24 heads x 64, 2176 tokens): 1024-query blocks 0.152 s,
    64-query blocks 0.023 s per call, equal results; below ~32 queries the per-call cost dominates.
    """
    return max(_MIN_BAND_BLOCK, left + right + 1)


def _banded(q, k, v, key_mask, left: int, right: int) -> torch.Tensor:
    n, block = q.shape[-2], _band_block(left, right)
    out = torch.empty_like(q)
    for start in range(0, n, block):
        stop = min(n, start + block)
        lo, hi = max(0, start - left), min(n, stop + right)
        qi = torch.arange(start, stop, device=q.device)[:, None]
        kj = torch.arange(lo, hi, device=q.device)[None, :]
        mask = ((kj - qi >= -left) & (kj - qi <= right))[None, None]
        if key_mask is not None:
            mask = mask & key_mask[:, None, None, lo:hi]
        out[..., start:stop, :] = F.scaled_dot_product_attention(
            q[..., start:stop, :], k[..., lo:hi, :], v[..., lo:hi, :], attn_mask=mask
        )
    return out


def _flash_masked(q, k, v, key_mask):
    """True masking with flash-attn varlen: pack valid tokens, run, scatter back (padded rows = 0).

    Self-attention only: one mask packs both queries and keys. The kernel takes half precision only, so
    float32 q/k/v run in float16 and the result is cast back, as the official flash path does.
    """
    if q.shape[-2] != k.shape[-2]:
        raise ValueError(f"masked flash attention packs queries and keys with one mask: self-attention only, "
                         f"got {q.shape[-2]} queries and {k.shape[-2]} keys")
    b, h, n, d = q.shape
    dtype = q.dtype if q.dtype in (torch.float16, torch.bfloat16) else torch.float16
    lengths = key_mask.sum(dim=1, dtype=torch.int32)
    cu = F.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
    flat = key_mask.reshape(-1)

    def pack(t):
        return t.transpose(1, 2).reshape(b * n, h, d)[flat].to(dtype)

    packed = _flash_varlen(pack(q), pack(k), pack(v), cu, cu, int(lengths.max()), int(lengths.max()))
    out = q.new_zeros(b * n, h, d)
    out[flat] = packed.to(q.dtype)
    return out.reshape(b, n, h, d).transpose(1, 2)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    b, n, _ = x.shape
    return x.reshape(b, n, heads, -1).transpose(1, 2)


class Attention(nn.Module):
    """Self- or cross-attention, standard or differential, with per-head q/k norm.

    Differential attention is softmax(q k^T) v - softmax(q_d k_d^T) v with shared v and no lambda,
    as in the released models. Fused projections are cut into equal blocks in the official order:
    self ``to_qkv`` -> q, k, v[, q_d, k_d]; cross ``to_q`` -> q[, q_d], ``to_kv`` -> k[, k_d], v.
    """

    def __init__(
        self,
        dim: int,
        dim_heads: int,
        *,
        cross: bool = False,
        differential: bool = False,
        qk_norm: str = "rms",
        qk_norm_eps: float = 1e-6,
    ):
        super().__init__()
        if dim % dim_heads:
            raise ValueError(f"dim {dim} is not a multiple of dim_heads {dim_heads}")
        self.heads = dim // dim_heads
        self.cross = cross
        self.differential = differential
        n_qk = 2 if differential else 1
        if cross:
            self.to_q = nn.Linear(dim, dim * n_qk, bias=False)
            self.to_kv = nn.Linear(dim, dim * (n_qk + 1), bias=False)
        else:
            self.to_qkv = nn.Linear(dim, dim * (2 * n_qk + 1), bias=False)
        self.to_out = nn.Linear(dim, dim, bias=False)
        self.q_norm = make_norm(qk_norm, dim_heads, qk_norm_eps)
        self.k_norm = make_norm(qk_norm, dim_heads, qk_norm_eps)

    def context_kv(self, context: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Cross-attention keys (normed) and values of ``context``, split into heads: ([k[, k_d]], v).

        They depend on the context alone, so a sampler that passes the same context at every step can
        compute them once and give them to ``forward`` as ``kv`` (the same operations: the same result).
        """
        if not self.cross:
            raise ValueError("context_kv: this is a self-attention module")
        kv = self.to_kv(context).chunk(3 if self.differential else 2, dim=-1)
        return [self.k_norm(split_heads(k, self.heads)) for k in kv[:-1]], split_heads(kv[-1], self.heads)

    def _project(self, x, context, kv):
        if not self.cross:
            parts = self.to_qkv(x).chunk(5 if self.differential else 3, dim=-1)
            qs, ks, v = parts[0::3], parts[1::3], parts[2]  # q, k, v[, q_d, k_d]
            return qs, [self.k_norm(split_heads(k, self.heads)) for k in ks], split_heads(v, self.heads)
        qs = self.to_q(x).chunk(2 if self.differential else 1, dim=-1)
        return (qs, *self.context_kv(context)) if kv is None else (qs, *kv)

    def forward(
        self,
        x: torch.Tensor,
        context: torch.Tensor | None = None,
        rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
        key_mask: torch.Tensor | None = None,
        padding_mode: str = "mask",
        window: int | tuple[int, int] | None = None,
        kv: tuple[list[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``kv``: this context's ``context_kv``, computed before (cross-attention; ``context`` is then unused)."""
        qs, ks, v = self._project(x, context, kv)
        qs = [self.q_norm(split_heads(q, self.heads)) for q in qs]
        if rotary is not None:
            qs = [apply_rotary(q, *rotary) for q in qs]
            ks = [apply_rotary(k, *rotary) for k in ks]
        out = attend(qs[0], ks[0], v, key_mask, padding_mode, window)
        if self.differential:
            out = out - attend(qs[1], ks[1], v, key_mask, padding_mode, window)
        b, h, n, d = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, n, h * d))
