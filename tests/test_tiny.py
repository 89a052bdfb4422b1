import json
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sa3_engine.models.config import load_config
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.models.text_encoder import TextEncoder
from sa3_engine.weights import tiny
from sa3_engine.weights.registry import resolve

REFERENCE_KEYS = Path(__file__).resolve().parents[2] / "shared" / "reference" / "keys-small-music.json"


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return tiny.write_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def test_released_folder_layout(built):
    names = {p.relative_to(built).as_posix() for p in built.rglob("*") if p.is_file()}
    assert {"model_config.json", "model.safetensors", "t5gemma-b-b-ul2/config.json",
            "t5gemma-b-b-ul2/model.safetensors", "t5gemma-b-b-ul2/tokenizer.json",
            "t5gemma-b-b-ul2/tokenizer_config.json"} == names
    assert [p.name for p in built.parent.iterdir()] == ["model"]  # no staging folder left behind
    config = load_config(built)
    assert config["model"]["diffusion"]["diffusion_objective"] == "rf_denoiser"
    assert config["model"]["pretransform"]["config"]["downsampling_ratio"] == 4096


def test_reloads_through_the_strict_loader(built):
    model = SA3Model.from_pretrained(built)
    stored = load_file(built / "model.safetensors")
    state = model.state_dict()
    assert state.keys() == stored.keys()
    assert all(torch.equal(state[k], stored[k]) for k in stored)
    # T5Gemma stays outside the model: none of its weights are in the checkpoint
    assert not any("embed_tokens" in k or k.startswith("encoder.") for k in stored)


def test_key_names_follow_the_released_layout(built):
    if not REFERENCE_KEYS.is_file():
        pytest.skip(f"reference key list not found at {REFERENCE_KEYS}")
    def pattern(key):
        return re.sub(r"\.\d+\.", ".N.", key)
    reference = {pattern(k) for k in json.loads(REFERENCE_KEYS.read_text())["keys"]}
    assert {pattern(k) for k in load_file(built / "model.safetensors")} == reference


def test_same_seed_same_weights_other_seed_other_weights(built, tmp_path):
    again = load_file(tiny.write_tiny_model(tmp_path / "again") / "model.safetensors")
    other = load_file(tiny.write_tiny_model(tmp_path / "other", seed=1) / "model.safetensors")
    first = load_file(built / "model.safetensors")
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["model.model.preprocess_conv.weight"], other["model.model.preprocess_conv.weight"])
    tokens = "t5gemma-b-b-ul2/tokenizer.json"
    assert (built / tokens).read_bytes() == (tmp_path / "again" / tokens).read_bytes()


def test_objective(tmp_path):
    folder = tiny.write_tiny_model(tmp_path / "base", objective="rectified_flow")
    assert load_config(folder)["model"]["diffusion"]["diffusion_objective"] == "rectified_flow"
    with pytest.raises(ValueError, match="objective"):
        tiny.tiny_config("v-prediction")
    with pytest.raises(FileExistsError, match="not empty"):
        tiny.write_tiny_model(folder)


def test_cached_build_resolves_as_tiny_random(tmp_path, monkeypatch):
    monkeypatch.setenv("SA3_CACHE_DIR", str(tmp_path / "cache"))
    found = resolve("tiny-random")
    assert found.folder == tmp_path / "cache" / "tiny-random-v2"
    assert found.text_encoder == found.folder / "t5gemma-b-b-ul2"
    monkeypatch.setattr(tiny, "write_tiny_model", lambda *a, **k: pytest.fail("rebuilt a cached tiny model"))
    assert resolve("tiny-random") == found
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["tiny-random-v2"]


def test_end_to_end_noise_is_finite_and_audible(built):
    """Prompt -> T5Gemma -> conditioning -> a few DiT Euler steps -> SAME decode."""
    config = load_config(built)
    model = SA3Model.from_pretrained(built)
    encoder = TextEncoder(built / "t5gemma-b-b-ul2")
    max_length = config["model"]["conditioning"]["configs"][0]["config"]["max_length"]
    hidden, mask = encoder.encode(["warm piano loop", ""], max_length)
    frames, channels = 8, model.io_channels
    cond = model.conditioning({
        "prompt": (hidden, mask),
        "seconds_total": [2.0, 2.0],
        "inpaint_mask": torch.zeros(2, 1, frames),
        "inpaint_masked_input": torch.zeros(2, channels, frames),
    })
    x = torch.randn(2, channels, frames, generator=torch.Generator().manual_seed(0))
    steps = torch.linspace(1, 0, 5)
    with torch.no_grad():
        for t, t_next in zip(steps[:-1], steps[1:], strict=True):
            v = model.dit(x, t.expand(2), cond.cross_attn_cond, cond.global_cond, cond.local_add_cond)
            x = x + (t_next - t) * v
        audio = model.autoencoder.decode(x)
    assert audio.shape == (2, 2, frames * 4096)
    assert torch.isfinite(audio).all()
    assert (audio.std(dim=-1) > 1e-3).all()  # not silent
    assert audio.abs().max() < 1  # noise, not clipping
    assert not torch.allclose(audio[0], audio[1])  # the prompt reaches the output
