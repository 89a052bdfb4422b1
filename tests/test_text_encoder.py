import os
import warnings

import pytest
import torch
from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel

from sa3_engine.models.text_encoder import TextEncoder
from sa3_engine.weights.tiny import write_tiny_text_encoder

PROMPT = "TrackType: Music, Genre: Deep House, warm analog synth at 124 BPM"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_tiny_text_encoder(tmp_path_factory.mktemp("t5") / "t5gemma-b-b-ul2", seed=3)


@pytest.fixture(scope="module")
def encoder(folder):
    return TextEncoder(folder)


def count_forwards(encoder: TextEncoder) -> list:
    calls = []
    encoder.model.register_forward_hook(lambda module, args, out: calls.append(1))
    return calls


def test_shapes_dtypes_and_right_padding(encoder):
    prompts = [PROMPT, "rain on a tin roof"]
    hidden, mask = encoder.encode(prompts, max_length=40)
    assert hidden.shape == (2, 40, encoder.hidden_size) and hidden.dtype == torch.float32
    assert encoder.hidden_size == 768
    assert mask.shape == (2, 40) and mask.dtype == torch.bool
    for row, prompt in zip(mask, prompts, strict=True):
        n = len(encoder.tokenizer(prompt)["input_ids"])
        assert 0 < n < 40
        assert row[:n].all() and not row[n:].any()
    assert torch.isfinite(hidden).all()
    assert not torch.allclose(hidden[0, 0], hidden[1, 0])


def test_matches_transformers_loaded_the_official_way(encoder, folder):
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    config.is_encoder_decoder = False
    model = T5GemmaEncoderModel.from_pretrained(folder, config=config).eval()
    tokens = tokenizer([PROMPT], truncation=True, max_length=32, padding="max_length", return_tensors="pt")
    with torch.no_grad():
        expected = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
    hidden, mask = encoder.encode([PROMPT], max_length=32)
    torch.testing.assert_close(hidden, expected.float(), rtol=1e-5, atol=1e-5)
    assert torch.equal(mask, tokens["attention_mask"].bool())


def test_empty_prompt(encoder):
    hidden, mask = encoder.encode(["", PROMPT], max_length=32)
    assert not mask[0].any() and mask[1].any()
    assert torch.isfinite(hidden).all()


def test_truncation(encoder):
    long = " ".join([PROMPT] * 20)
    with pytest.warns(UserWarning, match=r"ignored: '.{77}\.\.\.'$"):  # a long cut is shortened
        hidden, mask = encoder.encode([long], max_length=8)
    assert hidden.shape == (1, 8, 768) and mask.all()
    with pytest.warns(UserWarning, match="ignored"):
        short, _ = encoder.encode([PROMPT], max_length=8)
    torch.testing.assert_close(hidden, short)  # the same first 8 tokens


def test_a_truncated_prompt_warns_with_what_was_cut(folder):
    encoder = TextEncoder(folder)  # fresh: a cached prompt is never tokenised again
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a prompt that fits does not warn
        encoder.encode([PROMPT], max_length=64)
    with pytest.warns(UserWarning, match=r"^prompt: longer than the text encoder's 8 tokens; ignored: '.*124 BPM'"):
        encoder.encode([PROMPT], max_length=8)


def test_deterministic_across_instances_and_batches(folder, encoder):
    alone, _ = TextEncoder(folder).encode([PROMPT], max_length=24)
    batched, _ = encoder.encode(["something else entirely", PROMPT], max_length=24)
    torch.testing.assert_close(batched[1:], alone, rtol=1e-5, atol=1e-5)
    again, _ = TextEncoder(folder).encode([PROMPT], max_length=24)
    assert torch.equal(alone, again)


def test_recent_prompts_are_cached(folder):
    encoder = TextEncoder(folder, cache_size=2)
    calls = count_forwards(encoder)
    first, _ = encoder.encode(["a", "b"], max_length=12)
    assert len(calls) == 1
    expected = first.clone()
    first[:] = 0  # callers cannot corrupt the cache
    second, _ = encoder.encode(["b", "a", "a"], max_length=12)
    assert len(calls) == 1
    assert torch.equal(second, expected[[1, 0, 0]])
    encoder.encode(["a"], max_length=13)  # another length is another entry, and evicts "b"
    assert len(calls) == 2
    encoder.encode(["a"], max_length=12)
    assert len(calls) == 2
    encoder.encode(["b"], max_length=12)
    assert len(calls) == 3


def test_load_is_offline_and_leaves_the_environment_alone(folder, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    TextEncoder(folder)
    assert "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    TextEncoder(folder)
    assert os.environ["HF_HUB_OFFLINE"] == "0"


def test_missing_files_are_named(tmp_path, folder):
    partial = tmp_path / "t5"
    partial.mkdir()
    (partial / "config.json").write_bytes((folder / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="model.safetensors, tokenizer.json"):
        TextEncoder(partial)


def test_bad_arguments(encoder):
    with pytest.raises(TypeError, match="prompts"):
        encoder.encode(PROMPT, max_length=8)
    with pytest.raises(ValueError, match="prompts"):
        encoder.encode([], max_length=8)
    with pytest.raises(ValueError, match="max_length"):
        encoder.encode([PROMPT], max_length=0)
