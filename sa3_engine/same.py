"""SAME autoencoders (SAME-S and SAME-L): stereo audio <-> latent frames.

audio (B, C, N) -> patches (B, C*patch, N/patch) -> resampling blocks (transformers over groups of
``stride`` fine tokens plus learned tokens) -> Linear -> soft-norm bottleneck -> latents (B, D, T);
decoding runs the same path backwards. SAME-S attends within chunks of a few latent groups, with the
second half of each stack shifted by half a chunk; SAME-L attends in a sliding window of latent groups
and gates the last decoder feed-forwards with sin(pi x). Every size comes from the config.

Parameter names are the official ones, bare as in the standalone SAME checkpoints (a full SA3
checkpoint nests them under ``pretransform.model.``). With n stages:

- ``encoder.layers.{i}`` resampling block of stage i (fine to coarse), ``encoder.layers.{n+1}`` the
  Linear to latent_dim (indices n and n+2 are parameter-free transposes in the official model);
- ``decoder.layers.1`` the Linear from latent_dim (0 and 2 are transposes), ``decoder.layers.{3+k}``
  the resampling block of stage n-1-k (coarse to fine);
- ``bottleneck.{scaling_factor, bias, noise_scaling_factor, running_std}``.

Long audio is decoded with :meth:`SAMEAutoencoder.decode_chunked`: one chunk of latents at a time,
written into one preallocated output (peak memory measured in its docstring).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .attention import Attention
from .config import ConfigError, field
from .layers import FeedForward, Rotary, WNConv1d, make_norm

# eps of the rms pre-norms and q/k norms (unused by DyT): the official resampling block hard-codes it and
# ignores any config key, so reading one here would change the numerics of a config the official code
# runs unchanged. It is still spec data, so a block never hides a size.
NORM_EPS = 1e-3

# Official flags we do not implement, with the value that means "off". Anything else is refused
# rather than silently ignored (mask_noise > 0 would add random noise to the learned tokens).
_UNSUPPORTED_FLAGS = {
    "conformer": False,
    "layer_scale": False,
    "feat_scale": False,
    "cross_attn": False,
    "mask_noise": 0,
}


def pad_to_multiple(x: torch.Tensor, multiple: int, dim: int = -1) -> torch.Tensor:
    """Append zeros along ``dim`` up to a multiple of ``multiple``."""
    missing = -x.shape[dim] % multiple
    if not missing:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


# ----------------------------------------------------------------------------------------------
# Config


@dataclass(frozen=True)
class BlockSpec:
    """One transformer resampling block, as the official config describes it."""

    kind: str  # "encoder" (fine -> coarse) or "decoder" (coarse -> fine)
    in_channels: int
    out_channels: int
    stride: int
    depth: int
    dim_heads: int
    ff_mult: float
    differential: bool
    dyt: bool
    variable_stride: bool
    mapping_kernel: int
    mapping_bias: bool
    sinusoidal_blocks: int
    chunk_size: int | None  # fine-side tokens per attention chunk (SAME-S layout)
    midpoint_shift: bool
    window: tuple[int, int] | None  # latent groups left/right (SAME-L layout)
    norm_eps: float = NORM_EPS

    @property
    def width(self) -> int:
        return self.out_channels if self.kind == "encoder" else self.in_channels

    @property
    def group(self) -> int:
        """Tokens per latent group: ``stride`` fine tokens and one coarse token."""
        return self.stride + 1

    @property
    def chunk_tokens(self) -> int:
        """Tokens per attention chunk (chunked layout): chunk_size / stride groups."""
        return self.chunk_size // self.stride * self.group

    def output_length(self, n: int) -> int:
        """Tokens out for ``n`` tokens in, including the block's own zero padding."""
        if self.depth == 0:
            return n
        if self.kind == "encoder":
            return _round_up(n, self.stride if self.window else self.chunk_size) // self.stride
        return _round_up(n, 1 if self.window else self.chunk_size // self.stride) * self.stride


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _section(block: dict, name: str, where: str) -> dict:
    """``block[name]["config"]``, e.g. the encoder kwargs."""
    return field(field(block, name, where), "config", f"{where}.{name}")


def _stage_lists(cfg: dict, where: str) -> tuple[list[int], list[int], list[int]]:
    lists = [list(field(cfg, key, where)) for key in ("c_mults", "strides", "transformer_depths")]
    if not lists[0] or len({len(v) for v in lists}) != 1:
        raise ConfigError(
            f"{where}: c_mults, strides and transformer_depths must be non-empty lists of one length"
        )
    return lists[0], lists[1], lists[2]


def block_specs(cfg: dict, kind: str, where: str) -> list[BlockSpec]:
    """The resampling blocks of one side (``encoder``/``decoder`` ``config`` dict), in module order."""
    for flag, off in _UNSUPPORTED_FLAGS.items():
        if cfg.get(flag, off) != off:
            raise ConfigError(f"{where}.{flag}={cfg[flag]!r} is not supported")
    c_mults, strides, depths = _stage_lists(cfg, where)
    outer_key = "in_channels" if kind == "encoder" else "out_channels"
    dims = [int(field(cfg, outer_key, where))] + [
        int(m * field(cfg, "channels", where)) for m in c_mults
    ]
    window = cfg.get("sliding_window")
    if window is not None:
        if len(window) != 2:
            raise ConfigError(f"{where}.sliding_window must be [left, right] in latent groups, got {window!r}")
        window = (int(window[0]), int(window[1]))
    sinusoidal = list(cfg.get("sinusoidal_blocks", [0] * len(strides)))
    if len(sinusoidal) < len(strides):
        raise ConfigError(f"{where}.sinusoidal_blocks needs one entry per stage, got {sinusoidal!r}")
    common = dict(
        kind=kind,
        dim_heads=int(cfg.get("dim_heads", 128)),
        ff_mult=float(cfg.get("ff_mult", 3)),
        differential=bool(cfg.get("differential", True)),
        dyt=bool(cfg.get("dyt", True)),
        variable_stride=bool(cfg.get("variable_stride", False)),
        mapping_kernel=3 if cfg.get("conv_mapping", False) else 1,
        mapping_bias=bool(cfg.get("mapping_bias", True)),
        chunk_size=None if window else int(cfg.get("chunk_size", 128)),
        midpoint_shift=bool(cfg.get("chunk_midpoint_shift", False)) and window is None,
        window=window,
    )
    stages = range(len(strides)) if kind == "encoder" else reversed(range(len(strides)))
    specs = []
    for i in stages:
        fine, coarse = dims[i], dims[i + 1]
        spec = BlockSpec(
            in_channels=fine if kind == "encoder" else coarse,
            out_channels=coarse if kind == "encoder" else fine,
            stride=int(strides[i]),
            depth=int(depths[i]),
            sinusoidal_blocks=int(sinusoidal[i]) if kind == "decoder" else 0,
            **common,
        )
        _check_block(spec, f"{where} stage {i}")
        specs.append(spec)
    return specs


def _check_block(spec: BlockSpec, where: str) -> None:
    if spec.stride < 1 or spec.depth < 0:
        raise ConfigError(f"{where}: stride must be >= 1 and depth >= 0")
    if spec.window is None:
        if spec.chunk_size < spec.stride or spec.chunk_size % spec.stride:
            raise ConfigError(
                f"{where}: chunk_size {spec.chunk_size} must be a multiple of stride {spec.stride}"
            )
        if spec.midpoint_shift and spec.chunk_tokens % 2:
            raise ConfigError(f"{where}: the midpoint shift needs an even chunk ({spec.chunk_tokens} tokens)")


@dataclass(frozen=True)
class SAMEConfig:
    sample_rate: int
    audio_channels: int
    patch_size: int
    latent_dim: int
    encoder: list[BlockSpec]
    decoder: list[BlockSpec]
    auto_scale: bool
    soft_clip: bool

    @property
    def downsampling_ratio(self) -> int:
        return self.patch_size * math.prod(b.stride for b in self.encoder)

    @classmethod
    def from_dict(cls, cfg: dict, sample_rate: int | None = None) -> SAMEConfig:
        """Standalone SAME config, full SA3 config, or the bare autoencoder block of either."""
        block, where = cfg, "config"
        if "model" in cfg:
            sample_rate = cfg.get("sample_rate", sample_rate)
            block, where = cfg["model"], "model"
            if "encoder" not in block:  # full SA3 config: the autoencoder is the pretransform
                block, where = _section(block, "pretransform", where), "model.pretransform.config"
        if sample_rate is None:
            raise ConfigError("config field sample_rate is missing (top level of the model config)")
        enc_cfg = _section(block, "encoder", where)
        dec_cfg = _section(block, "decoder", where)
        patch = _section(block, "pretransform", where)
        for key, off in (("oversampling", 1), ("postfilter_channels", 0)):
            if patch.get(key, off) != off:
                raise ConfigError(f"{where}.pretransform.config.{key}={patch[key]!r} is not supported")
        bottleneck = _section(block, "bottleneck", where)
        if bottleneck.get("noise_augment_dim", 0) or bottleneck.get("noise_regularize", False):
            raise ConfigError(
                f"{where}.bottleneck: noise_augment_dim / noise_regularize (random decode) are not supported"
            )
        latent_dim = int(field(enc_cfg, "latent_dim", f"{where}.encoder.config"))
        config = cls(
            sample_rate=int(sample_rate),
            audio_channels=int(field(patch, "channels", f"{where}.pretransform.config")),
            patch_size=int(field(patch, "patch_size", f"{where}.pretransform.config")),
            latent_dim=latent_dim,
            encoder=block_specs(enc_cfg, "encoder", f"{where}.encoder.config"),
            decoder=block_specs(dec_cfg, "decoder", f"{where}.decoder.config"),
            auto_scale=bool(bottleneck.get("auto_scale", False)),
            soft_clip=bool(block["decoder"].get("soft_clip", False)),
        )
        config._check(block, dec_cfg, bottleneck, where)
        return config

    def _check(self, block: dict, dec_cfg: dict, bottleneck: dict, where: str) -> None:
        patch_channels = self.audio_channels * self.patch_size
        checks = [
            ("encoder.config.in_channels", self.encoder[0].in_channels, patch_channels),
            ("decoder.config.out_channels", self.decoder[-1].out_channels, patch_channels),
            ("decoder.config.latent_dim", dec_cfg.get("latent_dim", self.latent_dim), self.latent_dim),
            ("bottleneck.config.dim", bottleneck.get("dim", self.latent_dim), self.latent_dim),
            ("latent_dim", block.get("latent_dim", self.latent_dim), self.latent_dim),
            (
                "downsampling_ratio",
                block.get("downsampling_ratio", self.downsampling_ratio),
                self.downsampling_ratio,
            ),
            ("io_channels", block.get("io_channels", self.audio_channels), self.audio_channels),
        ]
        for name, got, expected in checks:
            if got != expected:
                raise ConfigError(f"{where}.{name} is {got}, but the rest of the config implies {expected}")


# ----------------------------------------------------------------------------------------------
# Modules


class PatchedPretransform(nn.Module):
    """Audio (B, C, N) <-> patches (B, C*patch, N/patch); channel index = c*patch + h."""

    def __init__(self, channels: int, patch_size: int):
        super().__init__()
        self.channels = channels
        self.patch_size = patch_size

    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        x = pad_to_multiple(audio, self.patch_size)
        b, c, n = x.shape
        return (
            x.reshape(b, c, n // self.patch_size, self.patch_size)
            .transpose(2, 3)
            .reshape(b, c * self.patch_size, -1)
        )

    def decode(self, patches: torch.Tensor) -> torch.Tensor:
        b, _, frames = patches.shape
        x = patches.reshape(b, self.channels, self.patch_size, frames).transpose(2, 3)
        return x.reshape(b, self.channels, frames * self.patch_size)


class SAMELayer(nn.Module):
    """Pre-norm transformer layer without conditioning: x += attn(norm(x)); x += ff(norm(x))."""

    def __init__(
        self,
        dim: int,
        dim_heads: int,
        ff_mult: float,
        differential: bool,
        dyt: bool,
        sinusoidal: bool,
        eps: float = NORM_EPS,
    ):
        super().__init__()
        dim_heads = min(dim_heads, dim)
        norm = "dyt" if dyt else "rms"
        self.pre_norm = make_norm(norm, dim, eps)
        self.self_attn = Attention(dim, dim_heads, differential=differential, qk_norm=norm, qk_norm_eps=eps)
        self.ff_norm = make_norm(norm, dim, eps)
        self.ff = FeedForward(dim, int(dim * ff_mult), "sin" if sinusoidal else "silu")
        self.rope = Rotary(dim_heads // 2)

    def forward(self, x: torch.Tensor, window: tuple[int, int] | None = None) -> torch.Tensor:
        """x (B, N, dim); RoPE positions 0..N-1 along this sequence."""
        rotary = self.rope.angles_for_length(x.shape[-2])
        x = x + self.self_attn(self.pre_norm(x), rotary=rotary, window=window)
        return x + self.ff(self.ff_norm(x))


class ResamplingBlock(nn.Module):
    """Transformer resampling block: groups of fine tokens and learned tokens, keep one side.

    Encoder: each group is ``stride`` input tokens then one learned token; the learned one is kept.
    Decoder: each group is one latent token then ``stride`` learned tokens; those are kept.
    """

    def __init__(self, spec: BlockSpec):
        super().__init__()
        self.spec = spec
        if spec.in_channels != spec.out_channels:
            self.mapping = WNConv1d(
                spec.in_channels, spec.out_channels, spec.mapping_kernel, spec.mapping_bias
            )
        else:
            self.mapping = nn.Identity()
        learned = 1 if spec.kind == "encoder" else spec.stride
        self.new_tokens = nn.Parameter(
            1e-5 * torch.randn(1, 1 if spec.variable_stride else learned, spec.width)
        )
        self.transformers = nn.ModuleList(
            SAMELayer(
                spec.width,
                spec.dim_heads,
                spec.ff_mult,
                spec.differential,
                spec.dyt,
                sinusoidal=spec.depth - j < spec.sinusoidal_blocks,
                eps=spec.norm_eps,
            )
            for j in range(spec.depth)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_channels, N) -> (B, out_channels, spec.output_length(N))."""
        spec = self.spec
        if not self.transformers:
            return self.mapping(x)
        encoder = spec.kind == "encoder"
        if encoder:  # pad before the mapping, so padded tokens carry the mapping's bias
            x = self.mapping(pad_to_multiple(x, spec.stride if spec.window else spec.chunk_size))
        tokens = x.transpose(1, 2)
        if not encoder and spec.window is None:  # zeros in hidden space, whole chunks of latents
            tokens = pad_to_multiple(tokens, spec.chunk_size // spec.stride, dim=1)
        b, n, d = tokens.shape
        given = spec.stride if encoder else 1
        learned = spec.group - given
        groups = n // given
        seq = torch.cat(
            [tokens.reshape(b, groups, given, d), self.new_tokens[:, None].expand(b, groups, learned, d)],
            dim=2,
        ).reshape(b, groups * spec.group, d)
        seq = self._run(seq)
        out = (
            seq.reshape(b, groups, spec.group, d)[:, :, given:]
            .reshape(b, groups * learned, d)
            .transpose(1, 2)
        )
        return out if encoder else self.mapping(out)

    def _run(self, seq: torch.Tensor) -> torch.Tensor:
        spec, layers = self.spec, list(self.transformers)
        if spec.window is not None:  # sliding window over the whole sequence
            window = (spec.window[0] * spec.group, spec.window[1] * spec.group)
            for layer in layers:
                seq = layer(seq, window)
            return seq
        size = spec.chunk_tokens
        split = len(layers) // 2 if spec.midpoint_shift else len(layers)
        seq = _within_chunks(layers[:split], seq, size)
        if split == len(layers):
            return seq
        # Second half: chunks shifted by half a chunk, ends padded with copies of the current states.
        half, n = size // 2, seq.shape[1]
        padded = torch.cat([seq[:, :half], seq, seq[:, n - half :]], dim=1)
        return _within_chunks(layers[split:], padded, size)[:, half : half + n]


def _within_chunks(layers: list[SAMELayer], seq: torch.Tensor, size: int) -> torch.Tensor:
    """Run layers on consecutive ``size``-token chunks independently (RoPE restarts per chunk)."""
    b, n, d = seq.shape
    x = seq.reshape(b * (n // size), size, d)
    for layer in layers:
        x = layer(x)
    return x.reshape(b, n, d)


class SAMEEncoder(nn.Module):
    def __init__(self, specs: list[BlockSpec], latent_dim: int):
        super().__init__()
        n = len(specs)
        blocks = {str(i): ResamplingBlock(spec) for i, spec in enumerate(specs)}
        self.layers = nn.ModuleDict({**blocks, str(n + 1): nn.Linear(specs[-1].out_channels, latent_dim)})
        self.stages = n

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        x = patches
        for i in range(self.stages):
            x = self.layers[str(i)](x)
        return self.layers[str(self.stages + 1)](x.transpose(1, 2)).transpose(1, 2)


class SAMEDecoder(nn.Module):
    def __init__(self, specs: list[BlockSpec], latent_dim: int):
        super().__init__()
        blocks = {str(3 + k): ResamplingBlock(spec) for k, spec in enumerate(specs)}
        self.layers = nn.ModuleDict({"1": nn.Linear(latent_dim, specs[0].in_channels), **blocks})
        self.stages = len(specs)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        x = self.layers["1"](latents.transpose(1, 2)).transpose(1, 2)
        for k in range(self.stages):
            x = self.layers[str(3 + k)](x)
        return x


class SoftNormBottleneck(nn.Module):
    """encode: (x * scaling_factor + bias) / running_std; decode: z * running_std (no inverse affine)."""

    def __init__(self, dim: int, auto_scale: bool):
        super().__init__()
        self.scaling_factor = nn.Parameter(torch.ones(1, dim, 1))
        self.bias = nn.Parameter(torch.zeros(1, dim, 1))
        self.noise_scaling_factor = nn.Parameter(torch.ones(1, 0, 1))  # empty, but a checkpoint key
        self.running_std = nn.Parameter(torch.ones(1), requires_grad=False) if auto_scale else None

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.scaling_factor + self.bias
        return x if self.running_std is None else x / self.running_std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return z if self.running_std is None else z * self.running_std


# ----------------------------------------------------------------------------------------------
# Chunked encode/decode (official hard-cut stitching)


def chunk_starts(total: int, chunk: int, hop: int) -> list[int]:
    """Starts 0, hop, 2*hop, ... that fit, plus one anchored at ``total - chunk`` if missing."""
    starts = list(range(0, total - chunk + 1, hop))
    if starts[-1] != total - chunk:
        starts.append(total - chunk)
    return starts


def surviving_ranges(out_starts: list[int], chunk: int, trim: int) -> list[tuple[int, int]]:
    """Chunk-local output ranges [lo, hi) that survive the official hard-cut stitching.

    Chunk i is written at ``out_starts[i]`` keeping [trim, chunk - trim), untrimmed at the outer
    edges of the first and last chunk, and later chunks overwrite earlier ones. The surviving
    ranges are disjoint and in output order, so each chunk can be written once and dropped.
    """
    last = len(out_starts) - 1
    kept = [(0 if i == 0 else trim, chunk if i == last else chunk - trim) for i in range(last + 1)]
    ranges = []
    for i, (start, (lo, hi)) in enumerate(zip(out_starts, kept, strict=True)):
        if i < last:
            hi = min(hi, out_starts[i + 1] + kept[i + 1][0] - start)
        ranges.append((lo, max(lo, hi)))
    return ranges


def _check_chunking(chunk_size: int, overlap: int) -> None:
    if chunk_size < 1 or not 0 <= overlap < chunk_size:
        raise ValueError(
            f"need chunk_size >= 1 and 0 <= overlap < chunk_size, got {chunk_size} and {overlap}"
        )


# ----------------------------------------------------------------------------------------------
# The autoencoder


class SAMEAutoencoder(nn.Module):
    def __init__(self, config: SAMEConfig):
        super().__init__()
        self.config = config
        self.patcher = PatchedPretransform(config.audio_channels, config.patch_size)
        self.encoder = SAMEEncoder(config.encoder, config.latent_dim)
        self.decoder = SAMEDecoder(config.decoder, config.latent_dim)
        self.bottleneck = SoftNormBottleneck(config.latent_dim, config.auto_scale)

    @classmethod
    def from_config(cls, cfg: dict, sample_rate: int | None = None) -> SAMEAutoencoder:
        """From a standalone SAME config, a full SA3 config, or the ``model.pretransform.config`` block
        (then ``sample_rate`` is needed: it lives at the top of the full config)."""
        return cls(SAMEConfig.from_dict(cfg, sample_rate))

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @property
    def downsampling_ratio(self) -> int:
        return self.config.downsampling_ratio

    @property
    def latent_dim(self) -> int:
        return self.config.latent_dim

    @property
    def io_channels(self) -> int:
        """Audio channels in and out."""
        return self.config.audio_channels

    def encoded_length(self, num_samples: int) -> int:
        """Latent frames ``encode`` returns for ``num_samples`` (the blocks' padding included)."""
        n = -(-num_samples // self.config.patch_size)
        for spec in self.config.encoder:
            n = spec.output_length(n)
        return n

    def decoded_length(self, num_latents: int) -> int:
        """Samples ``decode`` returns for ``num_latents`` frames (nothing is trimmed back)."""
        n = num_latents
        for spec in self.config.decoder:
            n = spec.output_length(n)
        return n * self.config.patch_size

    @property
    def dtype(self) -> torch.dtype:
        """The parameter dtype; inputs of any float dtype are cast to it, results come back float32."""
        return self.bottleneck.scaling_factor.dtype

    def _check(self, x: torch.Tensor, channels: int, name: str) -> None:
        if x.ndim != 3 or x.shape[1] != channels or not x.is_floating_point():
            raise ValueError(
                f"{name} must be a float tensor (batch, {channels}, time), got {tuple(x.shape)} {x.dtype}"
            )

    @torch.no_grad()
    def encode(self, audio: torch.Tensor) -> torch.Tensor:
        """audio (B, io_channels, N) at ``sample_rate`` -> float32 latents (B, latent_dim, encoded_length(N))."""
        self._check(audio, self.io_channels, "audio")
        return self.bottleneck.encode(self.encoder(self.patcher.encode(audio.to(self.dtype)))).float()

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """latents (B, latent_dim, T) -> float32 audio (B, io_channels, decoded_length(T))."""
        self._check(latents, self.latent_dim, "latents")
        audio = self.patcher.decode(self.decoder(self.bottleneck.decode(latents.to(self.dtype))))
        return (torch.tanh(audio) if self.config.soft_clip else audio).float()

    @torch.no_grad()
    def encode_chunked(self, audio: torch.Tensor, chunk_size: int = 128, overlap: int = 32) -> torch.Tensor:
        """Official chunked encode; chunk_size/overlap in latent frames.

        Returns floor(N / downsampling_ratio) float32 frames, or a plain ``encode`` if the audio is
        shorter than one chunk.
        """
        _check_chunking(chunk_size, overlap)
        self._check(audio, self.io_channels, "audio")
        ratio, total = self.downsampling_ratio, audio.shape[-1]
        chunk = chunk_size * ratio
        if total < chunk:
            return self.encode(audio)
        starts = chunk_starts(total, chunk, (chunk_size - overlap) * ratio)
        frames = total // ratio
        out_starts = [s // ratio for s in starts[:-1]] + [frames - chunk_size]
        out = audio.new_zeros(audio.shape[0], self.latent_dim, frames, dtype=torch.float32)
        for start, at, (lo, hi) in zip(
            starts, out_starts, surviving_ranges(out_starts, chunk_size, overlap // 2), strict=True
        ):
            if hi > lo:
                out[..., at + lo : at + hi] = self.encode(audio[..., start : start + chunk])[..., lo:hi]
        return out

    @torch.no_grad()
    def decode_chunked(
        self,
        latents: torch.Tensor,
        chunk_size: int = 128,
        overlap: int = 32,
        progress: Callable[[int, int], None] | None = None,
    ) -> torch.Tensor:
        """Official chunked decode (hard cuts, no crossfade); chunk_size/overlap in latent frames.

        Memory-bounded: one chunk of latents is decoded at a time and only the part of it that
        survives the stitching is copied into the output, allocated once (float32, B, io_channels,
        T * downsampling_ratio). ``progress(done, total)`` is called after each chunk; raising
        from it stops the decode. Latents shorter than one chunk get a plain ``decode``.

        Measured with ``bench/bench_decode.py`` (SAME-L/medium size, random weights, CPU float32,
        2 shared cores): a 6-minute decode (3876 frames, 41 chunks of 128/32) peaked at 4098 MiB
        RSS, of which 3251 MiB are the autoencoder weights and 121 MiB the output; the decode added
        616 MiB over the built model, independent of the length apart from the output (941 s).
        """
        _check_chunking(chunk_size, overlap)
        self._check(latents, self.latent_dim, "latents")
        frames = latents.shape[-1]
        if frames < chunk_size:
            return self.decode(latents)
        ratio = self.downsampling_ratio
        starts = chunk_starts(frames, chunk_size, chunk_size - overlap)
        ranges = surviving_ranges(starts, chunk_size, overlap // 2)
        out = latents.new_zeros(latents.shape[0], self.io_channels, frames * ratio, dtype=torch.float32)
        for done, (start, (lo, hi)) in enumerate(zip(starts, ranges, strict=True), start=1):
            if hi > lo:
                piece = self.decode(latents[..., start : start + chunk_size])
                out[..., (start + lo) * ratio : (start + hi) * ratio] = piece[..., lo * ratio : hi * ratio]
            if progress is not None:
                progress(done, len(starts))
        return out
