"""Reading official ``model_config.json`` dicts.

Two layouts exist: a full SA3 config (``model_type`` ``diffusion_cond``/``diffusion_cond_inpaint``, with
``model.{io_channels, pretransform, conditioning, diffusion}``) and a standalone SAME autoencoder config
(``model_type`` ``autoencoder``, with ``model.{encoder, decoder, bottleneck, pretransform, ...}``). The
dicts stay plain data; these helpers only find the blocks and name the missing field when one is absent.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CONFIG_FILENAME = "model_config.json"
# The released model folder: the DiT weights beside the config, T5Gemma in a subfolder (named by the config,
# else this one).
WEIGHTS_FILENAME = "model.safetensors"
# The subfolder of each released DiT repo holding T5Gemma, when the config names none.
TEXT_ENCODER_SUBFOLDER = "t5gemma-b-b-ul2"
TEXT_ENCODER_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json")


class ModelNotFound(FileNotFoundError):
    """A model (or one of its files) is not on this machine; the message says how to get it."""


class ConfigError(ValueError):
    """A config dict lacks a field or holds a value we cannot build."""


def load_config(path: str | Path) -> dict:
    """A config dict from a JSON file, or from ``model_config.json`` inside a folder."""
    path = Path(path)
    if path.is_dir():
        path = path / CONFIG_FILENAME
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no model config at {path}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a model config must be a JSON object")
    return config


def field(block: dict, key: str, where: str) -> Any:
    """block[key], or a ConfigError naming ``where.key``."""
    if not isinstance(block, dict):
        raise ConfigError(f"config field {where!r} must be an object")
    if key not in block:
        raise ConfigError(f"config field {where}.{key} is missing")
    return block[key]


def is_autoencoder_config(config: dict) -> bool:
    """True for the standalone SAME layout (encoder/decoder directly under ``model``)."""
    return "encoder" in field(config, "model", "config")


def autoencoder_config(config: dict) -> dict:
    """The autoencoder block of either layout (what ``SAMEAutoencoder.from_config`` takes)."""
    model = field(config, "model", "config")
    if "encoder" in model:
        return model
    return field(field(model, "pretransform", "model"), "config", "model.pretransform")


def diffusion_block(config: dict) -> dict:
    """``model.diffusion``: objective, conditioning ids, schedule options and the DiT ``config``."""
    if is_autoencoder_config(config):
        raise ConfigError("this is a standalone autoencoder config; it has no diffusion model")
    return field(field(config, "model", "config"), "diffusion", "model")


def dit_config(config: dict) -> dict:
    """``model.diffusion.config``: the DiT keyword arguments."""
    return field(diffusion_block(config), "config", "model.diffusion")


def conditioning_config(config: dict) -> dict:
    """``model.conditioning``: ``cond_dim`` and the list of conditioner ``configs``."""
    return field(field(config, "model", "config"), "conditioning", "model")


def sample_rate(config: dict) -> int:
    return int(field(config, "sample_rate", "config"))
