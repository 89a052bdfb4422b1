"""Conditioner heads, their config parsing and the conditioning assembly."""

from __future__ import annotations

import math

import pytest
import torch

from sa3_engine.models.conditioners import (
    Conditioner,
    ConditioningLayout,
    NumberConditioner,
    TextConditioner,
)
from sa3_engine.models.config import ConfigError
from sa3_engine.models.fourier import expo_fourier_features, expo_freqs, logsnr_timestep

T5 = "google/t5gemma-b-b-ul2"


def conditioning_config(cond_dim=768, padding_mode="learned", min_val=0, max_val=384):
    return {
        "cond_dim": cond_dim,
        "configs": [
            {"id": "prompt", "type": "t5gemma", "config": {"model_name": T5, "max_length": 256,
                                                           "padding_mode": padding_mode}},
            {"id": "seconds_total", "type": "number",
             "config": {"min_val": min_val, "max_val": max_val, "fourier_features_type": "expo"}},
        ],
    }


def test_fourier_table_and_features():
    freqs = expo_freqs(64).double()
    exact = torch.exp(torch.linspace(0, 1, 64, dtype=torch.float64) * math.log(1e4 / 0.5) + math.log(0.5))
    torch.testing.assert_close(freqs, exact, rtol=3e-6, atol=0)  # a few float32 ulps
    t = torch.tensor([0.0, 0.25, 1.0])
    features = expo_fourier_features(t, 128)
    assert features.shape == (3, 128)
    torch.testing.assert_close(features[0], torch.cat([torch.ones(64), torch.zeros(64)]))  # cos half first
    assert expo_fourier_features(t.half(), 128).dtype == torch.float16
    with pytest.raises(ValueError, match="even"):
        expo_fourier_features(t, 7)


def test_logsnr_timestep_maps_the_unit_interval_monotonically():
    t = torch.linspace(0, 1, 11)
    out = logsnr_timestep(t)
    assert out[0] == 0 and out[-1] == 1
    assert bool((out[1:] >= out[:-1]).all())


def test_number_conditioner_clamps_normalises_and_embeds():
    head = NumberConditioner(32, min_val=2, max_val=10)
    normalized = head.normalize([0.0, 2.0, 6.0, 10.0, 50.0])
    torch.testing.assert_close(normalized, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.0]))
    embeds, mask = head(torch.tensor([6.0, 50.0]))
    assert embeds.shape == (2, 1, 32) and mask.dtype == torch.bool and bool(mask.all())
    linear = head.embedder.embedding[1]
    expected = linear(expo_fourier_features(torch.tensor([0.5, 1.0]), linear.in_features))
    torch.testing.assert_close(embeds[:, 0], expected)


def test_number_conditioner_rejects_bad_ranges_and_types():
    with pytest.raises(ConfigError, match="max_val"):
        NumberConditioner(8, min_val=5, max_val=5)
    with pytest.raises(ConfigError, match="fourier_features_type"):
        NumberConditioner(8, fourier_features_type="learned")


@pytest.mark.parametrize("mode", ["learned", "zero", "none"])
def test_text_padding_modes(mode):
    head = TextConditioner(768, T5, padding_mode=mode)
    hidden = torch.randn(2, 5, 768)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    embeds, out_mask = head(hidden, mask)
    assert out_mask.dtype == torch.bool and out_mask.tolist() == mask.bool().tolist()
    torch.testing.assert_close(embeds[mask.bool()], hidden[mask.bool()])
    padded = embeds[0, 3:]
    if mode == "learned":
        torch.testing.assert_close(padded, head.padding_embedding.expand(2, -1))
    elif mode == "zero":
        assert bool((padded == 0).all())
    else:
        torch.testing.assert_close(padded, hidden[0, 3:])


def test_text_projection_only_when_widths_differ():
    assert set(TextConditioner(768, T5, padding_mode="learned").state_dict()) == {"padding_embedding"}
    projected = TextConditioner(512, T5, padding_mode="learned")
    assert {k: tuple(v.shape) for k, v in projected.state_dict().items()} == {
        "padding_embedding": (512,), "proj_out.weight": (512, 768), "proj_out.bias": (512,)}
    assert projected(torch.randn(1, 3, 768), torch.ones(1, 3))[0].shape == (1, 3, 512)


def test_text_conditioner_rejects_unknown_settings():
    with pytest.raises(ConfigError, match="model_name"):
        TextConditioner(768, "t5-base")
    with pytest.raises(ConfigError, match="padding_mode"):
        TextConditioner(768, T5, padding_mode="mean")
    with pytest.raises(ConfigError, match="tokenizer_path"):
        TextConditioner(768, T5, tokenizer_path="x")


def test_conditioner_keys_follow_the_official_layout():
    conditioner = Conditioner.from_config(conditioning_config())
    assert {k: tuple(v.shape) for k, v in conditioner.state_dict().items()} == {
        "conditioners.prompt.padding_embedding": (768,),
        "conditioners.seconds_total.embedder.embedding.1.weight": (768, 256),
        "conditioners.seconds_total.embedder.embedding.1.bias": (768,),
    }


def test_conditioner_config_errors_name_the_field():
    config = conditioning_config()
    config["configs"][1]["type"] = "float"
    with pytest.raises(ConfigError, match=r"configs\[1\]\.type"):
        Conditioner.from_config(config)
    with pytest.raises(ConfigError, match="cond_dim"):
        Conditioner.from_config({"configs": []})


def test_assembly_concatenates_as_the_official_wrapper():
    conditioner = Conditioner.from_config(conditioning_config(cond_dim=768))
    layout = ConditioningLayout(("prompt", "seconds_total"), ("seconds_total",), ("inpaint_mask", "inpaint_masked_input"))
    hidden, mask = torch.randn(2, 6, 768), torch.tensor([[1] * 6, [1] * 3 + [0] * 3])
    tensors = conditioner({"prompt": (hidden, mask), "seconds_total": [7.5, 300.0]})
    inpaint_mask, masked_input = torch.ones(2, 1, 9), torch.randn(2, 4, 9)
    cond = layout.assemble({**tensors, "inpaint_mask": inpaint_mask, "inpaint_masked_input": masked_input})
    seconds = tensors["seconds_total"][0]
    assert cond.cross_attn_cond.shape == (2, 7, 768)
    torch.testing.assert_close(cond.cross_attn_cond[:, :6], tensors["prompt"][0])
    torch.testing.assert_close(cond.cross_attn_cond[:, 6:], seconds)
    assert cond.cross_attn_mask.tolist() == [[True] * 7, [True] * 3 + [False] * 3 + [True]]
    torch.testing.assert_close(cond.global_cond, seconds[:, 0])
    torch.testing.assert_close(cond.local_add_cond, torch.cat([inpaint_mask, masked_input], 1))


def test_assembly_names_a_missing_input():
    layout = ConditioningLayout(("prompt",), (), ("inpaint_mask",))
    with pytest.raises(KeyError, match="inpaint_mask"):
        layout.assemble({"prompt": (torch.zeros(1, 2, 4), torch.ones(1, 2))})


def test_layout_rejects_unsupported_conditioning_kinds():
    with pytest.raises(ConfigError, match="prepend_cond_ids"):
        ConditioningLayout.from_config({"prepend_cond_ids": ["prompt"]})
    layout = ConditioningLayout.from_config({"cross_attention_cond_ids": ["prompt"], "global_cond_ids": ["s"]})
    assert layout == ConditioningLayout(("prompt",), ("s",), ())


def test_unknown_conditioner_input_is_rejected():
    conditioner = Conditioner.from_config(conditioning_config())
    with pytest.raises(KeyError, match="seconds_start"):
        conditioner({"seconds_start": [1.0]})
