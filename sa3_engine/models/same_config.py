"""SAME autoencoder configs: the official ``model_config.json`` encoder/decoder blocks read into checked specs."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sa3_engine.models.config import ConfigError, field

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


