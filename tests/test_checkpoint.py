"""Strict checkpoint loading: round trip, prefixes, dtypes, meta-device assignment and mismatch errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from sa3_engine.models.checkpoint import CheckpointError, load_weights

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"


class Small(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.proj = nn.Linear(3, width)
        self.register_buffer("table", torch.arange(width, dtype=torch.float32))
        self.steps = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(2))


def state_of(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    return {prefix + k: v.clone() for k, v in module.state_dict().items()}


def write(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(path))
    return path


def test_round_trip_into_a_meta_module_with_prefix(tmp_path):
    source = Small()
    file = write(tmp_path / "w.safetensors", {**state_of(source, "part."), "other.weight": torch.zeros(2)})
    with torch.device("meta"):
        target = Small()
    load_weights(target, file, prefix="part.")
    for key, value in source.state_dict().items():
        loaded = target.state_dict()[key]
        assert not loaded.is_meta
        assert torch.equal(loaded, value)


def test_load_into_a_materialised_module(tmp_path):
    source, target = Small(), Small()
    load_weights(target, write(tmp_path / "w.safetensors", state_of(source)))
    assert torch.equal(target.proj.weight, source.proj.weight)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_dtype_is_selectable(tmp_path, dtype):
    file = write(tmp_path / "w.safetensors", state_of(Small()))
    with torch.device("meta"):
        target = Small()
    load_weights(target, file, dtype=dtype)
    assert {t.dtype for t in target.state_dict().values()} == {dtype}


def test_dtype_none_keeps_the_stored_dtype(tmp_path):
    file = write(tmp_path / "w.safetensors", {k: v.half() for k, v in state_of(Small()).items()})
    with torch.device("meta"):
        target = Small()
    load_weights(target, file, dtype=None)
    assert target.proj.weight.dtype == torch.float16


def test_dtype_may_be_chosen_per_key(tmp_path):
    file = write(tmp_path / "w.safetensors", state_of(Small()))
    with torch.device("meta"):
        target = Small()
    load_weights(target, file, dtype=lambda key: torch.bfloat16 if key.startswith("steps.") else torch.float16)
    assert {k: t.dtype for k, t in target.state_dict().items()} == {
        "proj.weight": torch.float16, "proj.bias": torch.float16, "table": torch.float16,
        "steps.0.weight": torch.bfloat16, "steps.1.weight": torch.bfloat16}


@pytest.mark.parametrize(
    ("dtype", "autoencoder_dtype", "dit_table"),
    [(torch.bfloat16, torch.float32, torch.float32), (torch.float16, torch.float32, torch.float16),
     (torch.bfloat16, None, torch.float32)],
)
def test_sa3model_parts_and_rotary_tables_get_their_own_dtypes(dtype, autoencoder_dtype, dit_table):
    """The DiT in ``dtype``, SAME in ``autoencoder_dtype`` (None: ``dtype``), each cast once from the file; the
    rotary inv_freq tables stay float32 except under float16, where the official model_half rounds them."""
    case = PARITY / "01_dit_small_forward"
    if not case.is_dir():
        pytest.skip(f"parity vectors not found at {PARITY}")
    from sa3_engine.models.sa3 import SA3Model

    weights, config = case / "weights.safetensors", json.loads((case / "config.json").read_text())
    stored = load_file(str(weights))
    model = SA3Model.from_pretrained(weights, config=config, dtype=dtype, autoencoder_dtype=autoencoder_dtype)
    ae_dtype = dtype if autoencoder_dtype is None else autoencoder_dtype
    for key, tensor in model.state_dict().items():
        table = key.endswith(".inv_freq")
        if key.startswith("pretransform.model."):
            expected = (torch.float16 if ae_dtype == torch.float16 else torch.float32) if table else ae_dtype
        else:
            expected = dit_table if table else dtype
        assert tensor.dtype == expected, key
        assert torch.equal(tensor, stored[key].to(expected)), key


def test_missing_unexpected_and_misshaped_keys_are_listed(tmp_path):
    tensors = state_of(Small())
    del tensors["steps.1.weight"]
    tensors["steps.7.weight"] = torch.zeros(4, 4)
    tensors["proj.bias"] = torch.zeros(5)
    with pytest.raises(CheckpointError) as error:
        load_weights(Small(), write(tmp_path / "w.safetensors", tensors))
    text = str(error.value)
    assert "1 missing, 1 unexpected, 1 mis-shaped" in text
    assert "steps.1.weight" in text and "steps.7.weight" in text
    assert "proj.bias: checkpoint [5] vs model [4]" in text


def test_long_listings_are_truncated_with_a_count(tmp_path):
    tensors = {**state_of(Small()), **{f"extra.{i}": torch.zeros(1) for i in range(25)}}
    with pytest.raises(CheckpointError) as error:
        load_weights(Small(), write(tmp_path / "w.safetensors", tensors))
    text = str(error.value)
    assert "25 unexpected" in text and "... and 5 more" in text
    assert sum(line.startswith("  extra.") for line in text.splitlines()) == 20


def test_a_failed_load_leaves_the_module_untouched(tmp_path):
    target = Small()
    before = state_of(target)
    tensors = {k: torch.full_like(v, 7.0) for k, v in state_of(target).items() if k != "table"}
    with pytest.raises(CheckpointError, match="table"):
        load_weights(target, write(tmp_path / "w.safetensors", tensors))
    assert all(torch.equal(before[k], v) for k, v in target.state_dict().items())


def test_tensors_may_be_split_over_files_but_not_duplicated(tmp_path):
    tensors = state_of(Small())
    first = write(tmp_path / "a.safetensors", {k: v for k, v in tensors.items() if k.startswith("proj")})
    second = write(tmp_path / "b.safetensors", {k: v for k, v in tensors.items() if not k.startswith("proj")})
    load_weights(Small(), [first, second])
    with pytest.raises(CheckpointError, match="more than one file"):
        load_weights(Small(), [first, first])


def test_unreadable_files_raise_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_weights(Small(), tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_weights(Small(), bad)


def test_full_checkpoint_loads_strictly_into_sa3model(tmp_path):
    """A released-layout file (DiT + conditioner + SAME keys) fills SA3Model exactly."""
    case = PARITY / "01_dit_small_forward"
    if not case.is_dir():
        pytest.skip(f"parity vectors not found at {PARITY}")
    from sa3_engine.models.sa3 import SA3Model

    config = json.loads((case / "config.json").read_text())
    model = SA3Model.from_pretrained(case / "weights.safetensors", config=config)
    assert model.dit.transformer.memory_tokens.shape[0] == config["model"]["diffusion"]["config"]["num_memory_tokens"]
    assert not any(t.is_meta for t in model.state_dict().values())
    dit_only = write(tmp_path / "dit.safetensors", {
        k: v for k, v in load_file(str(case / "weights.safetensors")).items() if k.startswith("model.model.")})
    with pytest.raises(CheckpointError, match="pretransform.model."):
        SA3Model.from_pretrained(dit_only, config=config)
