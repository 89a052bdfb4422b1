"""Our module tree has exactly the keys and shapes of the released checkpoints (built on the meta device)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sa3_engine.models.conditioners import Conditioner
from sa3_engine.models.config import conditioning_config, dit_config
from sa3_engine.models.dit import DiffusionTransformer

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
MODELS = ["small-music", "medium"]


def reference(name: str) -> tuple[dict, dict[str, list[int]]]:
    if not REFERENCE.is_dir():
        pytest.skip(f"reference key lists not found at {REFERENCE}")
    config = json.loads((REFERENCE / "configs" / f"{name}.json").read_text())
    keys = json.loads((REFERENCE / f"keys-{name}.json").read_text())["keys"]
    return config, keys


def shapes(module: torch.nn.Module, prefix: str = "") -> dict[str, list[int]]:
    return {prefix + k: list(v.shape) for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", MODELS)
def test_dit_and_conditioner_keys(name):
    config, keys = reference(name)
    with torch.device("meta"):
        ours = {
            **shapes(DiffusionTransformer.from_config(dit_config(config)), "model.model."),
            **shapes(Conditioner.from_config(conditioning_config(config)), "conditioner."),
        }
    assert ours == {k: v for k, v in keys.items() if not k.startswith("pretransform.")}


@pytest.mark.parametrize("name", MODELS)
def test_full_model_keys(name):
    config, keys = reference(name)
    from sa3_engine.models.sa3 import SA3Model

    model = SA3Model.from_config(config, device="meta")
    ours = shapes(model)
    assert sorted(set(keys) - set(ours)) == [] and sorted(set(ours) - set(keys)) == []
    assert ours == keys
