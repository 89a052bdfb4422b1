"""attention.attend: the banded (sliding-window) path and the flash-attn varlen packing (with a stand-in kernel)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from sa3_engine.models import attention
from sa3_engine.models.attention import attend


def qkv(b: int = 2, h: int = 3, n: int = 150, d: int = 8, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(b, h, n, d, generator=g) for _ in range(3))


def dense_band(q, k, v, left: int, right: int, key_mask=None):
    i = torch.arange(q.shape[-2])
    mask = ((i[None] - i[:, None] >= -left) & (i[None] - i[:, None] <= right))[None, None]
    if key_mask is not None:
        mask = mask & key_mask[:, None, None, :]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


@pytest.mark.parametrize(("left", "right"), [(17, 17), (3, 40), (0, 0), (100, 5)])
@pytest.mark.parametrize("masked", [False, True])
def test_banded_attention_equals_the_dense_band(left, right, masked):
    q, k, v = qkv()
    key_mask = torch.arange(150)[None] < torch.tensor([150, 97])[:, None] if masked else None
    out = attend(q, k, v, key_mask, window=(left, right))
    torch.testing.assert_close(out, dense_band(q, k, v, left, right, key_mask), atol=1e-6, rtol=1e-5)


def test_banded_blocks_score_about_twice_the_keys_they_need(monkeypatch):
    """SAME-L's +-17-token window over one 128-frame chunk: blocks sized from the window, not 1024 queries."""
    scored, sdpa = [], F.scaled_dot_product_attention

    def counting_sdpa(q, k, v, attn_mask=None):
        scored.append(q.shape[-2] * k.shape[-2])
        return sdpa(q, k, v, attn_mask=attn_mask)

    q, k, v = qkv(b=1, h=1, n=128 * 17, d=4)
    monkeypatch.setattr(attention.F, "scaled_dot_product_attention", counting_sdpa)
    attend(q, k, v, window=17)
    needed = q.shape[-2] * (2 * 17 + 1)
    assert sum(scored) < 3 * needed


def fake_varlen(q, k, v, cu_q, cu_k, max_q, max_k):
    """flash_attn_varlen_func's contract on CPU: packed (tokens, heads, dim) half-precision inputs."""
    assert q.dtype in (torch.float16, torch.bfloat16) and cu_q.dtype == torch.int32
    outs = []
    for i in range(len(cu_q) - 1):
        a, b, c, d = int(cu_q[i]), int(cu_q[i + 1]), int(cu_k[i]), int(cu_k[i + 1])
        assert b - a <= max_q and d - c <= max_k
        o = F.scaled_dot_product_attention(*(t.transpose(0, 1).float() for t in (q[a:b], k[c:d], v[c:d])))
        outs.append(o.transpose(0, 1).to(q.dtype))
    return torch.cat(outs)


def test_flash_masking_packs_valid_tokens_and_zeroes_padded_rows(monkeypatch):
    monkeypatch.setattr(attention, "_flash_varlen", fake_varlen)
    q, k, v = qkv(b=3, n=20)
    lengths = torch.tensor([20, 13, 5])
    key_mask = torch.arange(20)[None] < lengths[:, None]
    out = attention._flash_masked(q, k, v, key_mask)
    reference = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
    assert out.dtype == torch.float32  # computed in float16, cast back
    for b, n in enumerate(lengths.tolist()):
        torch.testing.assert_close(out[b, :, :n], reference[b, :, :n], atol=3e-3, rtol=0)
        assert not out[b, :, n:].any()


def test_flash_masking_refuses_cross_attention(monkeypatch):
    monkeypatch.setattr(attention, "_flash_varlen", fake_varlen)
    q, _, _ = qkv(b=1, n=10)
    k, v, _ = qkv(b=1, n=12, seed=1)
    with pytest.raises(ValueError, match="self-attention only"):
        attention._flash_masked(q, k, v, torch.ones(1, 12, dtype=torch.bool))
