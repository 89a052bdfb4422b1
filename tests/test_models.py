import json
import os
from pathlib import Path

import pytest

from sa3_engine.cli.main import main as sa3
from sa3_engine.weights import registry as models
from sa3_engine.weights.registry import MODELS, ModelNotFound, resolve

# A full-model config as far as discovery reads it: a t5gemma prompt conditioner.
FULL_CONFIG = {
    "model_type": "diffusion_cond_inpaint",
    "sample_rate": 44100,
    "model": {
        "io_channels": 256,
        "pretransform": {"config": {}},
        "conditioning": {"cond_dim": 768, "configs": [
            {"id": "prompt", "type": "t5gemma", "config": {"model_name": "google/t5gemma-b-b-ul2"}},
            {"id": "seconds_total", "type": "number", "config": {}},
        ]},
        "diffusion": {"config": {}},
    },
}
AE_CONFIG = {"model_type": "autoencoder", "sample_rate": 44100, "model": {"encoder": {}, "decoder": {}}}
TEXT_FILES = models.TEXT_ENCODER_FILES


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """Point every location at empty folders under tmp_path."""
    for name in ("HF_HOME", "HUGGINGFACE_HUB_CACHE", "SA3_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("SA3_CACHE_DIR", str(tmp_path / "sa3-cache"))


def write_model(folder: Path, config=FULL_CONFIG, skip=(), subfolder="t5gemma-b-b-ul2") -> Path:
    """A model folder in the released layout (file contents are placeholders)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {"model_config.json": json.dumps(config), "model.safetensors": "weights"}
    if "conditioning" in config["model"]:
        files.update({f"{subfolder}/{name}": "{}" for name in TEXT_FILES})
    for name, text in files.items():
        if name not in skip:
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    return folder


def write_hf_cache(hub: Path, repo_id: str, revision: str = "a" * 40, main=True, **kwargs) -> Path:
    """The Hugging Face cache layout: blobs, snapshots/<rev>/ symlinks, refs/main."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    staging = write_model(hub.parent / "staging" / revision, **kwargs)
    snapshot = repo / "snapshots" / revision
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        blob = repo / "blobs" / f"{abs(hash((revision, str(path)))):x}"
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(path.read_bytes())
        link = snapshot / path.relative_to(staging)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if main:
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / "main").write_text(revision)
    return snapshot


def test_hf_cache_snapshot_from_refs_main(tmp_path):
    snapshot = write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-small-music")
    found = resolve("small-music")
    assert found.id == "small-music"
    assert found.config == snapshot / "model_config.json" and found.config.is_file()
    assert found.weights == snapshot / "model.safetensors"
    assert found.text_encoder == snapshot / "t5gemma-b-b-ul2"
    assert "Hugging Face cache" in found.source


def test_hf_home_is_respected(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hfhome"))
    snapshot = write_hf_cache(tmp_path / "hfhome" / "hub", "stabilityai/stable-audio-3-medium")
    assert resolve("medium").folder == snapshot


def test_hf_cache_revision_without_refs_is_found_by_scanning(tmp_path):
    snapshot = write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-small-sfx", revision="b" * 40, main=False)
    assert resolve("small-sfx").folder == snapshot


def test_text_encoder_subfolder_comes_from_the_config(tmp_path):
    config = json.loads(json.dumps(FULL_CONFIG))
    config["model"]["conditioning"]["configs"][0]["config"]["subfolder"] = "encoder"
    folder = write_model(tmp_path / "models" / "small-music", config=config, subfolder="encoder")
    assert resolve("small-music", tmp_path / "models").text_encoder == folder / "encoder"


def test_models_dir_accepts_id_and_repo_name(tmp_path):
    by_id = write_model(tmp_path / "models" / "medium-base")
    by_repo = write_model(tmp_path / "models" / "stable-audio-3-small-sfx-base")
    assert resolve("medium-base", tmp_path / "models").folder == by_id
    found = resolve("small-sfx-base", str(tmp_path / "models"))
    assert found.folder == by_repo and "--models-dir" in found.source


def test_order_models_dir_then_env_then_hf_cache(tmp_path, monkeypatch):
    write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-small-music")
    assert "Hugging Face cache" in resolve("small-music").source
    env_copy = write_model(tmp_path / "env" / "small-music")
    monkeypatch.setenv("SA3_MODELS_DIR", str(tmp_path / "env"))
    assert resolve("small-music").folder == env_copy
    arg_copy = write_model(tmp_path / "arg" / "small-music")
    assert resolve("small-music", tmp_path / "arg").folder == arg_copy


def test_partial_folder_falls_through_to_a_complete_one(tmp_path):
    write_model(tmp_path / "models" / "small-music", skip=("model.safetensors",))
    snapshot = write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-small-music")
    assert resolve("small-music", tmp_path / "models").folder == snapshot


def test_explicit_folder(tmp_path):
    folder = write_model(tmp_path / "anywhere" / "my-finetune")
    found = resolve(str(folder))
    assert (found.id, found.config, found.text_encoder) == ("my-finetune", folder / "model_config.json",
                                                           folder / "t5gemma-b-b-ul2")
    ae = resolve(str(write_model(tmp_path / "ae", config=AE_CONFIG)))
    assert ae.text_encoder is None


def test_explicit_folder_missing_weights(tmp_path):
    folder = write_model(tmp_path / "broken", skip=("model.safetensors",))
    with pytest.raises(ModelNotFound, match="model.safetensors"):
        resolve(str(folder))
    with pytest.raises(ModelNotFound, match="no folder"):
        resolve(str(tmp_path / "nowhere"))


def test_same_s_prefers_its_own_repo_then_full_small_checkpoints(tmp_path):
    hub = tmp_path / "hub"
    sfx = write_hf_cache(hub, "stabilityai/stable-audio-3-small-sfx")
    found = resolve("same-s")
    assert found.folder == sfx and found.text_encoder is None and "small-sfx" in found.source
    music = write_hf_cache(hub, "stabilityai/stable-audio-3-small-music")
    assert resolve("same-s").folder == music  # small-music is probed before small-sfx
    own = write_hf_cache(hub, "stabilityai/SAME-S", config=AE_CONFIG)
    assert resolve("same-s").folder == own


def test_same_l_comes_from_medium_not_medium_base(tmp_path):
    write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-medium-base")
    with pytest.raises(ModelNotFound, match="stabilityai/SAME-L"):
        resolve("same-l")
    medium = write_hf_cache(tmp_path / "hub", "stabilityai/stable-audio-3-medium")
    assert resolve("same-l").folder == medium


def test_missing_weights_message_names_file_place_and_command(tmp_path):
    folder = write_model(tmp_path / "models" / "small-music", skip=("model.safetensors",))
    with pytest.raises(ModelNotFound) as err:
        resolve("small-music", tmp_path / "models")
    text = str(err.value)
    assert f"{folder} (missing model.safetensors)" in text
    assert f"hf download stabilityai/stable-audio-3-small-music --local-dir {tmp_path / 'models' / 'small-music'}" in text
    assert "huggingface-cli download stabilityai/stable-audio-3-small-music" in text
    assert "gated" in text and "https://huggingface.co/stabilityai/stable-audio-3-small-music" in text
    assert str(tmp_path / "hub") in text


def test_missing_text_encoder_files_are_named(tmp_path):
    write_model(tmp_path / "models" / "medium", skip=("t5gemma-b-b-ul2/tokenizer.json",))
    with pytest.raises(ModelNotFound, match="t5gemma-b-b-ul2/tokenizer.json"):
        resolve("medium", tmp_path / "models")


def test_unknown_id_lists_known_ids():
    with pytest.raises(ValueError) as err:
        resolve("large")
    assert "'large'" in str(err.value)
    assert all(model_id in str(err.value) for model_id in MODELS)


def test_tiny_not_built_is_reported_without_building(tmp_path):
    with pytest.raises(ModelNotFound, match="not built yet"):
        resolve("tiny-random", build_tiny=False)
    assert not (tmp_path / "sa3-cache").exists()


def test_sa3_models_lists_every_id(tmp_path, capsys):
    found = write_model(tmp_path / "models" / "small-music")
    write_model(tmp_path / "models" / "medium", skip=("model.safetensors",))
    assert sa3(["models", "--models-dir", str(tmp_path / "models")]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert set(MODELS) <= set(lines)
    assert "found" in lines["small-music"] and str(found) in lines["small-music"]
    assert "missing" in lines["medium"] and "model.safetensors" in lines["medium"]
    assert "missing" in lines["same-l"] and "stabilityai/SAME-L" in lines["same-l"]
    assert "found" in lines["same-s"]  # from the small-music checkpoint


def test_sa3_models_one_id(tmp_path, capsys):
    assert sa3(["models", "small-sfx", "--models-dir", str(tmp_path / "models")]) == 1
    assert "hf download stabilityai/stable-audio-3-small-sfx" in capsys.readouterr().out
    write_model(tmp_path / "models" / "small-sfx")
    assert sa3(["models", "small-sfx", "--models-dir", str(tmp_path / "models")]) == 0
    assert "t5gemma-b-b-ul2" in capsys.readouterr().out
