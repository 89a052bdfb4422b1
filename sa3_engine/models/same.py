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

from collections.abc import Callable

import torch
from torch import nn

from sa3_engine.models.attention import Attention
from sa3_engine.models.layers import FeedForward, Rotary, WNConv1d, make_norm
from sa3_engine.models.same_config import NORM_EPS, BlockSpec, SAMEConfig


def pad_to_multiple(x: torch.Tensor, multiple: int, dim: int = -1) -> torch.Tensor:
    """Append zeros along ``dim`` up to a multiple of ``multiple``."""
    missing = -x.shape[dim] % multiple
    if not missing:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x, x.new_zeros(shape)], dim=dim)


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

    def compile_decoder(self) -> bool:
        """``torch.compile`` the decoder's transformer layers with dynamic shapes, so their element-wise work
        (DyT norms, sin/SiLU gates, RoPE) fuses: a 10 s bfloat16 SAME-S decode measured 1.38x faster, and
        one compilation serves every length. A decoder attending in a sliding window (SAME-L) stays eager:
        its layers compiled again at every new length (175 s measured for one). Returns whether it compiled."""
        if any(spec.window is not None for spec in self.config.decoder):
            return False
        for layer in self.decoder.modules():
            if isinstance(layer, SAMELayer):
                layer.compile(dynamic=True)
        return True

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
