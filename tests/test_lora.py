"""LoRA / DoRA adapters: official-format files, stacking, run-time strength, exact unload; parity case 08."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from sa3_engine.models.lora import (
    expand_pattern,
    load_lora,
    loaded_loras,
    matches_any,
    read_adapter_file,
    set_lora_strength,
    unload_lora,
)

PARITY = Path(__file__).resolve().parents[2] / "shared" / "parity"
SUFFIX = ".parametrizations.weight.0."


class Wrapper(nn.Module):
    """Stands in for the DiT wrapper: ``model.<layer>`` names like the official one."""

    def __init__(self):
        super().__init__()
        self.model = nn.Module()
        self.model.proj = nn.Linear(6, 5)
        self.model.conv = nn.Conv1d(5, 4, 3, padding=1)
        self.model.norm = nn.LayerNorm(4)


class Cond(nn.Module):
    def __init__(self):
        super().__init__()
        self.conditioners = nn.ModuleDict({"seconds_total": nn.Linear(3, 6)})


def make_pair(seed: int = 0) -> tuple[Wrapper, Cond]:
    torch.manual_seed(seed)
    return Wrapper(), Cond()


def run(pair, x: torch.Tensor) -> torch.Tensor:
    wrapper, cond = pair
    h = wrapper.model.proj(cond.conditioners["seconds_total"](x))
    return wrapper.model.conv(h[:, :, None].expand(-1, -1, 7))


LAYERS = {  # name -> (fan_out, fan_in) with Conv1d weights viewed as (out, in * k)
    "model.proj": (5, 6),
    "model.conv": (4, 15),
    "conditioners.seconds_total": (6, 3),
}


def adapter_tensors(adapter_type: str, rank: int, seed: int, layers=LAYERS, zero_b: bool = False) -> dict:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, (fan_out, fan_in) in layers.items():
        key = name + SUFFIX
        if adapter_type.endswith("-xs"):
            out[key + "M_xs"] = torch.randn(rank, rank, generator=g)
        else:
            out[key + "lora_A"] = torch.randn(rank, fan_in, generator=g)
            out[key + "lora_B"] = torch.zeros(fan_out, rank) if zero_b else torch.randn(fan_out, rank, generator=g)
        base = adapter_type.removesuffix("-xs")
        if base in ("dora-rows", "dora-cols"):
            out[key + "magnitude"] = torch.rand(fan_out if base == "dora-rows" else fan_in, generator=g) + 0.5
        if base == "bora":
            out[key + "magnitude_r"] = torch.rand(fan_out, generator=g) + 0.5
            out[key + "magnitude_c"] = torch.rand(fan_in, generator=g) + 0.5
    return {k: v.half() for k, v in out.items()}


def write(path: Path, tensors: dict, **config) -> Path:
    save_file(tensors, str(path), metadata={"lora_config": json.dumps(config)} if config else None)
    return path


def weights(pair) -> dict[str, torch.Tensor]:
    wrapper, cond = pair
    return {
        "model.proj": wrapper.model.proj.weight.detach().clone(),
        "model.conv": wrapper.model.conv.weight.detach().clone(),
        "conditioners.seconds_total": cond.conditioners["seconds_total"].weight.detach().clone(),
    }


# ------------------------------------------------------------------ independent formulas (float64)


def expected_weight(w: torch.Tensor, tensors: dict, layer: str, adapter_type: str, scaling: float,
                    strength: float) -> torch.Tensor:
    t = {k[len(layer + SUFFIX):]: v.double() for k, v in tensors.items() if k.startswith(layer + SUFFIX)}
    w2 = w.double().reshape(w.shape[0], -1)
    base = adapter_type.removesuffix("-xs")
    if adapter_type.endswith("-xs"):
        u, _, vh = torch.linalg.svd(w2, full_matrices=False)
        r = t["M_xs"].shape[0]
        for j in range(u.shape[1]):  # largest-magnitude entry of each U column positive
            if u[u[:, j].abs().argmax(), j] < 0:
                u[:, j], vh[j] = -u[:, j], -vh[j]
        delta = u[:, :r] @ t["M_xs"] @ vh[:r]
    else:
        delta = t["lora_B"] @ t["lora_A"]
    if base == "lora":
        out = w2 + scaling * strength * delta
    elif strength == 0:
        out = w2
    else:
        v = w2 + scaling * strength * delta
        if base == "dora-rows":
            out = v / v.norm(dim=1, keepdim=True) * t["magnitude"][:, None]
        elif base == "dora-cols":
            out = v / v.norm(dim=0, keepdim=True) * t["magnitude"][None, :]
        else:
            rows = v / v.norm(dim=1, keepdim=True) * t["magnitude_r"][:, None]
            out = rows / rows.norm(dim=0, keepdim=True) * t["magnitude_c"][None, :]
    return out.reshape(w.shape)


# ------------------------------------------------------------------------------------------ tests


@pytest.mark.parametrize(
    "adapter_type", ["lora", "dora-rows", "dora-cols", "bora", "lora-xs", "dora-rows-xs", "dora-cols-xs", "bora-xs"]
)
@pytest.mark.parametrize("strength", [0.7, 0.0, -1.3])
def test_adapted_weights_follow_the_formulas(tmp_path, adapter_type, strength):
    pair = make_pair()
    base = weights(pair)
    # rank 3: these weights' singular vectors then need mixed sign flips, which -xs results depend on
    tensors = adapter_tensors(adapter_type, rank=3, seed=1)
    path = write(tmp_path / "a.safetensors", tensors, rank=3, alpha=4.5, adapter_type=adapter_type)
    load_lora(pair, path, strength=strength)
    got = weights(pair)
    for layer, w in base.items():
        want = expected_weight(w, tensors, layer, adapter_type, 1.5, strength)
        torch.testing.assert_close(got[layer].double(), want, atol=1e-5, rtol=1e-5)


def test_dora_at_strength_zero_returns_the_base_weight_exactly(tmp_path):
    pair = make_pair()
    base = weights(pair)
    load_lora(pair, write(tmp_path / "d.safetensors", adapter_tensors("dora-rows", 2, 1), adapter_type="dora-rows"),
              strength=0.0)
    for layer, w in weights(pair).items():
        assert torch.equal(w, base[layer])


def test_stacked_adapters_chain_in_load_order(tmp_path):
    pair = make_pair()
    base = weights(pair)
    lora_t = adapter_tensors("lora", 2, seed=1)
    dora_t = adapter_tensors("dora-rows", 3, seed=2)
    load_lora(pair, write(tmp_path / "l.safetensors", lora_t, rank=2, alpha=4.0, adapter_type="lora"), strength=0.5)
    load_lora(pair, write(tmp_path / "d.safetensors", dora_t, rank=3, alpha=3.0, adapter_type="dora-rows"),
              strength=0.8)
    got = weights(pair)
    for layer, w in base.items():
        first = expected_weight(w, lora_t, layer, "lora", 2.0, 0.5)
        want = expected_weight(first, dora_t, layer, "dora-rows", 1.0, 0.8)
        torch.testing.assert_close(got[layer].double(), want, atol=1e-5, rtol=1e-5)
    # DoRA after LoRA is not DoRA before LoRA: the order is really kept
    swapped = expected_weight(expected_weight(base["model.proj"], dora_t, "model.proj", "dora-rows", 1.0, 0.8),
                              lora_t, "model.proj", "lora", 2.0, 0.5)
    assert (got["model.proj"].double() - swapped).abs().max() > 1e-3
    assert [lora.name for lora in loaded_loras(pair)] == ["l", "d"]


def test_strength_changes_without_reloading(tmp_path):
    pair = make_pair()
    x = torch.randn(2, 3)
    tensors = adapter_tensors("lora", 2, seed=1)
    lora = load_lora(pair, write(tmp_path / "l.safetensors", tensors, adapter_type="lora"), strength=1.0)
    at_one = run(pair, x)
    set_lora_strength(pair, lora, 0.0)
    at_zero = run(pair, x)
    set_lora_strength(pair, 0, 1.0)  # by load index
    assert torch.equal(run(pair, x), at_one)
    assert not torch.allclose(at_one, at_zero)
    unload_lora(pair, lora)
    assert torch.allclose(run(pair, x), at_zero, atol=1e-6)
    with pytest.raises(ValueError, match="finite"):
        set_lora_strength(pair, None, math.nan)


def test_set_strength_for_all_and_one(tmp_path):
    pair = make_pair()
    a = load_lora(pair, write(tmp_path / "a.safetensors", adapter_tensors("lora", 2, 1), adapter_type="lora"))
    b = load_lora(pair, write(tmp_path / "b.safetensors", adapter_tensors("lora", 2, 2), adapter_type="lora"))
    set_lora_strength(pair, None, 0.25)
    assert (a.strength, b.strength) == (0.25, 0.25)
    set_lora_strength(pair, -1, 0.5)
    assert (a.strength, b.strength) == (0.25, 0.5)
    with pytest.raises(IndexError):
        set_lora_strength(pair, 2, 1.0)


def test_unload_restores_the_original_parameters_bit_identically(tmp_path):
    pair = make_pair()
    wrapper, cond = pair
    originals = {name: p for name, p in list(wrapper.named_parameters()) + list(cond.named_parameters())}
    snapshot = {name: p.detach().clone() for name, p in originals.items()}
    x = torch.randn(2, 3)
    before = run(pair, x)
    first = load_lora(pair, write(tmp_path / "a.safetensors", adapter_tensors("dora-rows", 2, 1),
                                  adapter_type="dora-rows"))
    second = load_lora(pair, write(tmp_path / "b.safetensors", adapter_tensors("lora", 2, 2), adapter_type="lora"))
    assert not torch.equal(run(pair, x), before)
    unload_lora(pair, first)  # from the middle of the chain
    assert loaded_loras(pair) == [second]
    unload_lora(pair, 0)
    assert loaded_loras(pair) == []
    after = dict(list(wrapper.named_parameters()) + list(cond.named_parameters()))
    assert after.keys() == originals.keys()
    for name, p in after.items():
        assert p is originals[name]
        assert torch.equal(p, snapshot[name])
    assert type(wrapper.model.proj) is nn.Linear
    assert torch.equal(run(pair, x), before)
    with pytest.raises(ValueError, match="not loaded"):
        unload_lora(pair, first)


def test_zero_b_lora_is_a_no_op(tmp_path):
    pair = make_pair()
    base = weights(pair)
    load_lora(pair, write(tmp_path / "z.safetensors", adapter_tensors("lora", 2, 1, zero_b=True), adapter_type="lora"))
    for layer, w in weights(pair).items():
        assert torch.equal(w, base[layer])


def test_unknown_layer_is_an_error_naming_the_key(tmp_path):
    pair = make_pair()
    tensors = adapter_tensors("lora", 2, 1)
    tensors["model.missing" + SUFFIX + "lora_A"] = torch.zeros(2, 6).half()
    tensors["model.missing" + SUFFIX + "lora_B"] = torch.zeros(5, 2).half()
    with pytest.raises(ValueError, match="model.missing"):
        load_lora(pair, write(tmp_path / "bad.safetensors", tensors, adapter_type="lora"))
    assert loaded_loras(pair) == []  # nothing half-attached
    assert type(pair[0].model.proj) is nn.Linear


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda t: t.pop("model.proj" + SUFFIX + "lora_B"), "missing"),
        (lambda t: t.update({"model.proj" + SUFFIX + "magnitude": torch.ones(5).half()}), "unexpected"),
        (lambda t: t.update({"model.proj" + SUFFIX + "lora_A": torch.ones(3, 6).half()}), "shape"),
        (lambda t: t.update({"model.norm" + SUFFIX + "lora_A": torch.ones(2, 4).half(),
                             "model.norm" + SUFFIX + "lora_B": torch.ones(4, 2).half()}), "LayerNorm"),
        (lambda t: t.update({"model.proj.lora_down": torch.ones(2, 6).half()}), "unrecognised"),
    ],
)
def test_malformed_files_are_rejected(tmp_path, mutate, message):
    pair = make_pair()
    tensors = adapter_tensors("lora", 2, 1)
    mutate(tensors)
    with pytest.raises(ValueError, match=message):
        load_lora(pair, write(tmp_path / "bad.safetensors", tensors, rank=2, adapter_type="lora"))
    assert loaded_loras(pair) == []


def test_corrupt_files_are_a_value_error_naming_the_file(tmp_path):
    pair = make_pair()
    good = write(tmp_path / "good.safetensors", adapter_tensors("lora", 2, 1), rank=2, adapter_type="lora")
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-10])
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    for path in (truncated, garbage):
        with pytest.raises(ValueError, match=f"^{re.escape(str(path))}: not a safetensors LoRA file"):
            load_lora(pair, path)
    assert loaded_loras(pair) == []


def test_config_defaults_and_legacy_dora(tmp_path):
    tensors = adapter_tensors("dora-cols", 3, 1)
    legacy = {k: v[None, :] if k.endswith("magnitude") else v for k, v in tensors.items()}  # (1, fan_in)
    f = read_adapter_file(write(tmp_path / "legacy.safetensors", legacy, adapter_type="dora"))
    assert (f.config.adapter_type, f.config.rank, f.config.alpha) == ("dora-cols", 3, 3.0)
    assert f.layers["model.proj"]["magnitude"].shape == (6,)
    assert f.layers["model.proj"]["lora_A"].dtype == torch.float32
    f = read_adapter_file(write(tmp_path / "plain.safetensors", adapter_tensors("lora", 2, 1)))
    assert (f.config.adapter_type, f.config.rank, f.config.alpha) == ("lora", 2, 2.0)
    # newer official files add DoRA row norms baked against their training base; we recompute them
    baked = {**tensors, "model.proj" + SUFFIX + "baked_vnorm_row": torch.ones(5)}
    f = read_adapter_file(write(tmp_path / "baked.safetensors", baked, adapter_type="dora-cols"))
    assert set(f.layers["model.proj"]) == {"lora_A", "lora_B", "magnitude"}
    with pytest.raises(ValueError, match="unsupported lora_config adapter_type"):
        read_adapter_file(write(tmp_path / "odd.safetensors", tensors, adapter_type="vera"))


def test_include_exclude_filters(tmp_path):
    assert expand_pattern("layers.[0-2].x") == ["layers.0.x", "layers.1.x", "layers.2.x"]
    assert matches_any("model.transformer.layers.11.ff", ["layers.[10-11]."])
    assert not matches_any("model.transformer.layers.1.ff", ["layers.[10-11]."])
    tensors = adapter_tensors("lora", 2, 1)
    pair = make_pair()
    base = weights(pair)
    lora = load_lora(pair, write(tmp_path / "a.safetensors", tensors, adapter_type="lora"), exclude=["seconds_total"])
    assert lora.layer_names == ("model.model.conv", "model.model.proj")
    assert torch.equal(weights(pair)["conditioners.seconds_total"], base["conditioners.seconds_total"])
    with pytest.raises(ValueError, match="exclude"):  # the file's own filter contradicts its tensors
        load_lora(make_pair(), write(tmp_path / "b.safetensors", tensors, adapter_type="lora", exclude=["conv"]))


def test_ckpt_layout(tmp_path):
    tensors = {k: v.float() for k, v in adapter_tensors("lora", 2, 1).items()}
    path = tmp_path / "a.ckpt"
    torch.save({"state_dict": tensors, "lora_config": {"rank": 2, "alpha": 1.0, "adapter_type": "lora"}}, path)
    f = read_adapter_file(path)
    assert f.config.alpha == 1.0 and set(f.layers) == set(LAYERS)
    torch.save({"state_dict": tensors, "callbacks": {"x": Path("y")}}, path)  # not plain data
    with pytest.raises(ValueError, match="convert_lora_ckpt_to_safetensors"):
        read_adapter_file(path)


# ------------------------------------------------------------------------------ parity case 08


def test_parity_case_08_lora_and_dora():
    from sa3_engine.parity import run_case

    case = PARITY / "08_lora"
    if not case.is_dir():
        pytest.skip(f"parity vectors not found at {case}")
    rows = run_case(case)
    failures = [row.line() for row in rows if not row.ok]
    assert not failures, "\n".join(failures)
    assert {row.tensor for row in rows} >= {"v_lora_s0p7", "v_dora_s1", "seconds_embedding_dora_s0p7"}


def test_update_is_computed_in_float32_and_cast_to_the_weight_dtype(tmp_path):
    pair = make_pair()
    for module in pair:
        module.to(torch.bfloat16)
    base = weights(pair)
    tensors = adapter_tensors("lora", 2, seed=1)
    load_lora(pair, write(tmp_path / "l.safetensors", tensors, adapter_type="lora"), strength=0.3)
    got = weights(pair)
    for layer, w in base.items():
        t = {k[len(layer + SUFFIX):]: v.float() for k, v in tensors.items() if k.startswith(layer + SUFFIX)}
        delta = (0.3 * (t["lora_B"] @ t["lora_A"])).view(w.shape).to(torch.bfloat16)
        assert got[layer].dtype == torch.bfloat16
        assert torch.equal(got[layer], w + delta)


def test_sa3_model_gets_adapters_on_dit_and_conditioner():
    from sa3_engine.models.conditioners import Conditioner
    from sa3_engine.models.config import conditioning_config, dit_config
    from sa3_engine.models.dit import DiffusionTransformer
    from sa3_engine.models.sa3 import Pretransform, SA3Model

    case = PARITY / "08_lora"
    if not case.is_dir():
        pytest.skip(f"parity vectors not found at {case}")
    config = json.loads((case / "config.json").read_text())
    dit = DiffusionTransformer.from_config(dit_config(config))
    # the autoencoder plays no part here
    model = SA3Model(config, dit, Conditioner.from_config(conditioning_config(config)), Pretransform(nn.Identity()))
    before = model.conditioner.conditioners["seconds_total"].embedder.embedding[1].weight.detach().clone()
    lora = load_lora(model, case / "lora.safetensors", strength=0.5)
    assert "model.model.transformer.project_in" in lora.layer_names
    assert "conditioner.conditioners.seconds_total.embedder.embedding.1" in lora.layer_names
    assert not torch.equal(model.conditioner.conditioners["seconds_total"].embedder.embedding[1].weight, before)
    assert loaded_loras(model) == [lora]
    unload_lora(model, lora)
    assert torch.equal(model.conditioner.conditioners["seconds_total"].embedder.embedding[1].weight, before)
