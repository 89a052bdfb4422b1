"""Model folders in the released layout, written by training and read back to continue it.

A full model folder: ``model_config.json`` + ``model.safetensors`` (DiT, conditioner heads and SAME under
their official keys) + the text encoder subfolder its config names (T5Gemma; a MiniLM conditioner needs
none). A standalone autoencoder folder: ``model_config.json`` (``model_type`` "autoencoder") +
``model.safetensors`` with bare SAME keys, as SAME-S/L are published. Folders are written in a sibling
temporary folder and renamed into place, so a folder is absent or complete.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from sa3_engine.models.config import (
    CONFIG_FILENAME,
    WEIGHTS_FILENAME,
    autoencoder_config,
    diffusion_block,
    is_autoencoder_config,
    load_config,
    sample_rate,
)
from sa3_engine.models.sa3 import SA3Model, load_autoencoder
from sa3_engine.weights.registry import text_encoder_subfolder


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {key: value.detach().float().contiguous().clone() for key, value in module.state_dict().items()}


def _write_folder(folder: Path, config: dict, state: dict[str, torch.Tensor], extra: dict[str, Path]) -> Path:
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        staging.chmod(0o755)
        (staging / CONFIG_FILENAME).write_text(json.dumps(config, indent=1) + "\n")
        save_file(state, str(staging / WEIGHTS_FILENAME), metadata={"format": "pt"})
        for name, source in extra.items():
            shutil.copytree(source, staging / name)
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def autoencoder_only_config(config: dict) -> dict:
    """The standalone SAME config of a full or standalone config."""
    if is_autoencoder_config(config):
        return copy.deepcopy(config)
    return {"model_type": "autoencoder", "sample_rate": sample_rate(config),
            "audio_channels": int(config.get("audio_channels", 2)), "model": copy.deepcopy(autoencoder_config(config))}


def write_autoencoder_folder(autoencoder: nn.Module, config: dict, folder: Path) -> Path:
    return _write_folder(folder, autoencoder_only_config(config), _state(autoencoder), {})


def with_objective(config: dict, objective: str) -> dict:
    config = copy.deepcopy(config)
    diffusion_block(config)["diffusion_objective"] = objective
    return config


def write_model_folder(model: SA3Model, config: dict, folder: Path, text_encoder: Path | None) -> Path:
    """A full model folder; ``text_encoder`` is the folder to copy under the config's subfolder, if it has one."""
    subfolder = text_encoder_subfolder(config)
    extra = {}
    if subfolder is not None:
        if text_encoder is None or not Path(text_encoder).is_dir():
            raise FileNotFoundError(f"this config's text conditioner needs its encoder folder ({subfolder}); "
                                    "pass --text-encoder")
        extra[subfolder] = Path(text_encoder)
    return _write_folder(folder, config, _state(model), extra)


def full_config_with_autoencoder(config: dict, autoencoder_folder: Path) -> dict:
    """``config`` (full) with its pretransform replaced by the trained autoencoder's config."""
    config = copy.deepcopy(config)
    ae = load_config(autoencoder_folder)
    config["model"]["pretransform"]["config"] = copy.deepcopy(autoencoder_config(ae))
    return config


def model_with_autoencoder(config: dict, autoencoder_folder: Path, seed: int) -> SA3Model:
    """A new SA3 model (random DiT and heads, drawn from ``seed``) around a trained, frozen autoencoder."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SA3Model.from_config(config)
    model.pretransform.model.load_state_dict(load_autoencoder(autoencoder_folder).state_dict())
    return model


def trainable_model(folder: Path) -> SA3Model:
    """A released-layout model loaded for training: float32, train mode, autoencoder frozen."""
    model = SA3Model.from_pretrained(folder, dtype=torch.float32)
    model.requires_grad_(True).train()
    model.pretransform.requires_grad_(False).eval()
    return model


def text_encoder_folder(folder: Path) -> Path | None:
    """The text encoder subfolder of a model folder (None when its config needs none)."""
    subfolder = text_encoder_subfolder(load_config(folder))
    return None if subfolder is None else Path(folder) / subfolder
