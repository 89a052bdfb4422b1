"""The SA3 diffusion transformer (DiT): small (standard attention) and medium (differential attention).

Built from ``model.diffusion.config``; module paths equal the official ones below ``model.model.``.
One forward: x + preprocess_conv(x) -> project_in -> memory tokens prepended -> blocks with
AdaLN-single (self-attention with RoPE, unmodulated cross-attention, local-additive embedding, SwiGLU)
-> memory tokens dropped -> project_out -> + postprocess_conv. Returns the velocity, shaped like x.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from sa3_engine.models.attention import PADDING_MODES, Attention
from sa3_engine.models.config import ConfigError, field
from sa3_engine.models.fourier import expo_fourier_features, logsnr_timestep
from sa3_engine.models.layers import NORM_KINDS, FeedForward, RMSNorm, Rotary, make_norm

# Official DiT options this engine supports at one value only: key -> (official default, supported value).
_FIXED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "patch_size": (1, 1),
    "project_cond_tokens": (True, True),
    "project_global_cond": (True, True),
    "transformer_type": ("continuous_transformer", "continuous_transformer"),
    "global_cond_type": ("prepend", "adaLN"),
    "timestep_cond_type": ("global", "global"),
    "timestep_features_type": ("learned", "expo"),
    "input_concat_dim": (0, 0),
    "prepend_cond_dim": (0, 0),
    "rotary_pos_emb": (True, True),
    "cross_attn_rotary_pos_emb": (False, False),
    "causal": (False, False),
    "conformer": (False, False),
    "layer_scale": (False, False),
    "sliding_window": (None, None),
    "use_sinusoidal_emb": (False, False),
    "use_abs_pos_emb": (False, False),
    "final_cross_attn_ix": (-1, -1),
}
# Accepted and irrelevant at inference (initialisation only, or only read for other option values).
_IGNORED_OPTIONS = {"type", "zero_init_branch_outputs", "timestep_embed_dim", "diffusion_objective"}
_BUILD_OPTIONS = {
    "io_channels", "embed_dim", "depth", "num_heads", "cond_token_dim", "global_cond_dim", "local_add_cond_dim",
    "num_memory_tokens", "timestep_features_dim", "timestep_features_logsnr", "norm_type", "norm_kwargs",
    "attn_kwargs", "ff_kwargs",
}
_ATTN_OPTIONS = {"qk_norm", "differential", "qk_norm_eps"}
_FF_OPTIONS = {"mult"}
_NORM_OPTIONS = {"force_fp32", "eps"}
_MIN_ROTARY_DIM = 32  # the DiT rotates max(head_dim / 2, 32) dims per head


def _check_options(block: dict, allowed: set[str], where: str) -> None:
    unknown = set(block) - allowed
    if unknown:
        raise ConfigError(f"config field(s) {', '.join(f'{where}.{k}' for k in sorted(unknown))} not supported")


def _norm_kind(block: dict, key: str, default: str, where: str) -> str:
    kind = block.get(key, default)
    if kind not in NORM_KINDS:
        given = f"= {kind!r}" if key in block else f"is missing, and its official default {kind!r}"
        raise ConfigError(f"config field {where}.{key} {given} is not supported (expected one of {NORM_KINDS})")
    return kind


class FP32RMSNorm(RMSNorm):
    """RMSNorm computed in float32 and cast back (``norm_kwargs.force_fp32``); same parameters."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.gamma.float(), self.eps).to(x.dtype)


def _block_norm(norm_type: str, dim: int, norm_kwargs: dict) -> nn.Module:
    eps = float(norm_kwargs.get("eps", 1e-5))
    if norm_kwargs.get("force_fp32") and norm_type in ("rms", "rms_norm"):
        return FP32RMSNorm(dim, eps)
    return make_norm(norm_type, dim, eps)


def _mlp(dim_in: int, dim: int, bias: bool) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim_in, dim, bias=bias), nn.SiLU(), nn.Linear(dim, dim, bias=bias))


class DiTBlock(nn.Module):
    """One transformer layer with AdaLN-single modulation and gate sigmoid(1 - gate)."""

    def __init__(
        self,
        dim: int,
        dim_heads: int,
        *,
        cross_attend: bool,
        local_add_cond_dim: int | None,
        norm_type: str,
        norm_kwargs: dict,
        differential: bool,
        qk_norm: str,
        qk_norm_eps: float,
        ff_mult: float,
    ):
        super().__init__()
        attn = dict(differential=differential, qk_norm=qk_norm, qk_norm_eps=qk_norm_eps)
        self.pre_norm = _block_norm(norm_type, dim, norm_kwargs)
        self.self_attn = Attention(dim, dim_heads, **attn)
        self.cross_attend_norm = _block_norm(norm_type, dim, norm_kwargs) if cross_attend else None
        self.cross_attn = Attention(dim, dim_heads, cross=True, **attn) if cross_attend else None
        self.ff_norm = _block_norm(norm_type, dim, norm_kwargs)
        self.ff = FeedForward(dim, int(dim * ff_mult))
        self.to_scale_shift_gate = nn.Parameter(torch.randn(6 * dim) / dim**0.5)
        self.to_local_embed = _mlp(local_add_cond_dim, dim, bias=True) if local_add_cond_dim else None

    def conditioning(self, context: torch.Tensor | None, local_add_cond: torch.Tensor | None, tokens: int) -> tuple:
        """What this layer computes from the conditioning alone, the same at every sampler step: the
        cross-attention (K, V) of the context and the local-add embedding over ``tokens`` positions."""
        kv = emb = None
        if context is not None and self.cross_attn is not None:
            kv = self.cross_attn.context_kv(context)
        if local_add_cond is not None and self.to_local_embed is not None:
            emb = self.to_local_embed(local_add_cond)
            # Left-pad over the memory tokens (a negative pad crops, as the official helper does).
            emb = F.pad(emb, (0, 0, tokens - emb.shape[1], 0))
        return kv, emb

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        conditioning: tuple,
        rotary: tuple[torch.Tensor, torch.Tensor],
        key_mask: torch.Tensor | None,
        padding_mode: str,
    ) -> torch.Tensor:
        """``conditioning``: this layer's :meth:`conditioning` of the window."""
        kv, local_embed = conditioning
        scale_sa, shift_sa, gate_sa, scale_ff, shift_ff, gate_ff = (
            (self.to_scale_shift_gate + modulation)[:, None, :].chunk(6, dim=-1)
        )
        h = self.pre_norm(x) * (1 + scale_sa) + shift_sa
        h = self.self_attn(h, rotary=rotary, key_mask=key_mask, padding_mode=padding_mode)
        x = x + h * torch.sigmoid(1 - gate_sa)
        if kv is not None:
            x = x + self.cross_attn(self.cross_attend_norm(x), kv=kv)
        if local_embed is not None:
            x = x + local_embed
        h = self.ff_norm(x) * (1 + scale_ff) + shift_ff
        return x + self.ff(h) * torch.sigmoid(1 - gate_ff)


class DiTTransformer(nn.Module):
    """The block stack with its input/output projections, memory tokens, RoPE table and adaLN embedder."""

    def __init__(self, dim: int, depth: int, dim_heads: int, dim_in: int, dim_out: int, num_memory_tokens: int,
                 **block_kwargs):
        super().__init__()
        self.num_memory_tokens = num_memory_tokens
        self.project_in = nn.Linear(dim_in, dim, bias=False)
        self.project_out = nn.Linear(dim, dim_out, bias=False)
        self.rotary_pos_emb = Rotary(max(dim_heads // 2, _MIN_ROTARY_DIM))
        if num_memory_tokens > 0:
            self.memory_tokens = nn.Parameter(torch.randn(num_memory_tokens, dim))
        self.global_cond_embedder = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim * 6))
        self.layers = nn.ModuleList(DiTBlock(dim, dim_heads, **block_kwargs) for _ in range(depth))

    def forward(self, x, global_embed, conditioning, padding_mask, padding_mode, return_hidden):
        """``conditioning``: per layer, its ``DiTBlock.conditioning``."""
        batch = x.shape[0]
        x = self.project_in(x)
        key_mask = padding_mask
        if self.num_memory_tokens > 0:
            x = torch.cat((self.memory_tokens.expand(batch, -1, -1), x), dim=1)
            if padding_mask is not None:  # memory tokens are always valid keys
                memory_valid = padding_mask.new_ones(batch, self.num_memory_tokens)
                key_mask = torch.cat((memory_valid, padding_mask), dim=1)
        rotary = self.rotary_pos_emb.angles_for_length(x.shape[1])
        modulation = self.global_cond_embedder(global_embed)
        hidden = []
        for layer, layer_conditioning in zip(self.layers, conditioning, strict=True):
            x = layer(x, modulation, layer_conditioning, rotary, key_mask, padding_mode)
            if return_hidden:
                hidden.append(x)
        out = self.project_out(x[:, self.num_memory_tokens :, :])
        return out, hidden


class DiffusionTransformer(nn.Module):
    """v = DiT(x (B, C, T), t (B,), cross_attn_cond, global_cond, local_add_cond, padding_mask)."""

    def __init__(
        self,
        *,
        io_channels: int,
        embed_dim: int,
        depth: int,
        num_heads: int,
        cond_token_dim: int = 0,
        global_cond_dim: int = 0,
        local_add_cond_dim: int | None = None,
        num_memory_tokens: int = 0,
        timestep_features_dim: int = 256,
        timestep_features_logsnr: bool = False,
        norm_type: str = "rms_norm",
        norm_kwargs: dict | None = None,
        differential: bool = False,
        qk_norm: str = "rms",
        qk_norm_eps: float = 1e-6,
        ff_mult: float = 4,
    ):
        super().__init__()
        if embed_dim % num_heads:
            raise ConfigError(f"DiT embed_dim {embed_dim} is not a multiple of num_heads {num_heads}")
        dim_heads = embed_dim // num_heads
        if dim_heads < _MIN_ROTARY_DIM:
            raise ConfigError(f"DiT head size embed_dim/num_heads = {dim_heads} must be at least {_MIN_ROTARY_DIM}")
        self.io_channels = io_channels
        self.local_add_cond_dim = local_add_cond_dim or 0
        self.timestep_features_dim = timestep_features_dim
        self.timestep_features_logsnr = timestep_features_logsnr
        self.to_timestep_embed = _mlp(timestep_features_dim, embed_dim, bias=True)
        self.to_cond_embed = _mlp(cond_token_dim, embed_dim, bias=False) if cond_token_dim > 0 else None
        self.to_global_embed = _mlp(global_cond_dim, embed_dim, bias=False) if global_cond_dim > 0 else None
        self.transformer = DiTTransformer(
            embed_dim, depth, dim_heads, io_channels, io_channels, num_memory_tokens,
            cross_attend=cond_token_dim > 0, local_add_cond_dim=local_add_cond_dim, norm_type=norm_type,
            norm_kwargs=norm_kwargs or {}, differential=differential, qk_norm=qk_norm, qk_norm_eps=qk_norm_eps,
            ff_mult=ff_mult,
        )
        self.preprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.postprocess_conv = nn.Conv1d(io_channels, io_channels, 1, bias=False)
        self.compiled = False  # compile_blocks()

    @classmethod
    def from_config(cls, config: dict) -> DiffusionTransformer:
        """From ``model.diffusion.config`` (the official DiT kwargs); unsupported options raise ConfigError."""
        where = "model.diffusion.config"
        _check_options(config, set(_FIXED_OPTIONS) | _IGNORED_OPTIONS | _BUILD_OPTIONS, where)
        for key, (default, supported) in _FIXED_OPTIONS.items():
            if config.get(key, default) != supported:
                raise ConfigError(f"config field {where}.{key} = {config.get(key, default)!r} is not supported "
                                  f"(only {supported!r})")
        attn = dict(config.get("attn_kwargs") or {})
        ff = dict(config.get("ff_kwargs") or {})
        norm_kwargs = dict(config.get("norm_kwargs") or {})
        _check_options(attn, _ATTN_OPTIONS, f"{where}.attn_kwargs")
        _check_options(ff, _FF_OPTIONS, f"{where}.ff_kwargs")
        _check_options(norm_kwargs, _NORM_OPTIONS, f"{where}.norm_kwargs")
        # official defaults: layer_norm blocks without q/k norm, neither of which SA3 models use
        norm_type = _norm_kind(config, "norm_type", "layer_norm", where)
        qk_norm = _norm_kind(attn, "qk_norm", "none", f"{where}.attn_kwargs")
        return cls(
            io_channels=int(field(config, "io_channels", where)),
            embed_dim=int(field(config, "embed_dim", where)),
            depth=int(field(config, "depth", where)),
            num_heads=int(field(config, "num_heads", where)),
            cond_token_dim=int(config.get("cond_token_dim", 0)),
            global_cond_dim=int(config.get("global_cond_dim", 0)),
            local_add_cond_dim=config.get("local_add_cond_dim"),
            num_memory_tokens=int(config.get("num_memory_tokens", 0)),
            timestep_features_dim=int(config.get("timestep_features_dim", 256)),
            timestep_features_logsnr=bool(config.get("timestep_features_logsnr", False)),
            norm_type=norm_type,
            norm_kwargs=norm_kwargs,
            differential=bool(attn.get("differential", False)),
            qk_norm=qk_norm,
            qk_norm_eps=float(attn.get("qk_norm_eps", 1e-6)),
            ff_mult=ff.get("mult", 4),
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.preprocess_conv.weight.dtype

    def compile_blocks(self) -> None:
        """``torch.compile`` every block, with dynamic shapes (one compilation serves every length): the
        small element-wise operations between the matrix products fuse (docs/performance.md)."""
        for layer in self.transformer.layers:
            layer.compile(dynamic=True)
        self.compiled = True

    def timestep_embed(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) t -> (B, embed_dim); the Fourier features of float32 t, rounded to fp16 first under float16.

        Under ``model_half`` the official code rounds t to fp16 here (REFERENCE 13.6), and features of
        ~6e4 rad depend on every bit of t, so float16 models keep that quirk. No official path rounds t to
        bfloat16 (about 30x coarser than fp16), so every other dtype keeps t float32.
        """
        t = t.float()
        if self.timestep_features_logsnr:
            t = logsnr_timestep(t)
        if self.dtype == torch.float16:
            t = t.half()
        features = expo_fourier_features(t[:, None], self.timestep_features_dim)
        return self.to_timestep_embed(features.to(self.dtype))

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cross_attn_cond: torch.Tensor | None = None,
        global_cond: torch.Tensor | None = None,
        local_add_cond: torch.Tensor | None = None,
        padding_mask: torch.Tensor | None = None,
        padding_mode: str = "mask",
        return_hidden: bool = False,
        cache: StepCache | None = None,
    ):
        """Velocity (B, C, T). padding_mask (B, T): True = valid frame.

        padding_mode "mask" = true masking (the official GPU path); "vzero" = the official CPU path.
        With return_hidden, also the residual stream after each layer, (depth, B, M + T, E).
        ``cache``: what depends on the conditioning alone (each layer's cross-attention K/V and local-add
        embedding) is computed once per conditioning tensor given and reused at every step (same result).
        """
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
        if x.dim() != 3 or x.shape[1] != self.io_channels:
            raise ValueError(f"x must be (B, {self.io_channels}, T), got {tuple(x.shape)}")
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must be ({x.shape[0]},), got {tuple(t.shape)}")
        if padding_mask is not None and padding_mask.shape != (x.shape[0], x.shape[2]):
            raise ValueError(f"padding_mask must be {(x.shape[0], x.shape[2])}, got {tuple(padding_mask.shape)}")
        if cross_attn_cond is not None and self.to_cond_embed is None:
            raise ValueError("cross_attn_cond given, but this DiT has no cross-attention (cond_token_dim 0)")
        if local_add_cond is not None and local_add_cond.shape[1] != self.local_add_cond_dim:
            raise ValueError(f"local_add_cond must have {self.local_add_cond_dim} channels, "
                             f"got {tuple(local_add_cond.shape)}")
        dtype = self.dtype
        x = x.to(dtype)
        tokens = self.transformer.num_memory_tokens + x.shape[2]
        conditioning = (cache or StepCache(size=0)).get(
            (cross_attn_cond, local_add_cond, tokens),
            lambda: self._layer_conditioning(cross_attn_cond, local_add_cond, tokens),
        )
        global_embed = self.timestep_embed(t)
        if global_cond is not None:
            if self.to_global_embed is None:
                raise ValueError("global_cond given, but this DiT has no global conditioning (global_cond_dim 0)")
            global_embed = self.to_global_embed(global_cond.to(dtype)) + global_embed
        if padding_mask is not None:
            padding_mask = padding_mask.to(device=x.device, dtype=torch.bool)
        x = self.preprocess_conv(x) + x
        out, hidden = self.transformer(
            x.transpose(1, 2), global_embed, conditioning, padding_mask, padding_mode, return_hidden
        )
        out = out.transpose(1, 2)
        out = self.postprocess_conv(out) + out
        return (out, torch.stack(hidden)) if return_hidden else out

    def _layer_conditioning(self, cross_attn_cond, local_add_cond, tokens: int) -> list[tuple]:
        context = None if cross_attn_cond is None else self.to_cond_embed(cross_attn_cond.to(self.dtype))
        if local_add_cond is not None:
            local_add_cond = local_add_cond.to(self.dtype).transpose(1, 2)
        return [layer.conditioning(context, local_add_cond, tokens) for layer in self.transformer.layers]


class StepCache:
    """The DiT's step-invariant work for one sampler run, keyed by the identity of the conditioning
    tensors (and the token count): a caller that passes the same tensors at every step computes each
    layer's cross-attention K/V and local-add embedding once. At most ``size`` entries are kept (with
    guidance, the conditional and the batched [cond; uncond] inputs), the oldest dropped first.
    Create one per sampler run: it holds references to the tensors it was given.
    """

    def __init__(self, size: int = 2):
        self.size = size
        self._entries: list[tuple[tuple, object]] = []

    def get(self, key: tuple, compute):
        """The value stored for ``key`` (tensors compared by identity, other items by value), else compute()."""
        for known, value in self._entries:
            if len(known) == len(key) and all(map(_same, known, key)):
                return value
        value = compute()
        self._entries = [*self._entries, (key, value)][-self.size :] if self.size > 0 else []
        return value


def _same(a, b) -> bool:
    return a is b if a is None or isinstance(a, torch.Tensor) else a == b
