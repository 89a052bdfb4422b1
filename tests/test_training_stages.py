"""Every training stage for a few steps on tiny data from the tiny config: the run finishes, its loss is
finite, the written folder loads in ``Pipeline.load`` and generates finite audio of the requested length.
The chain is the recipe's: autoencoder -> encode -> dit -> distill -> adversarial, and lora on the result."""

import json
import math
import shutil

import numpy as np
import pytest
import torch

from sa3_engine.audio import write_json, write_wav
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.models.lora import read_adapter_file
from sa3_engine.models.sa3 import load_autoencoder
from sa3_engine.training.adversarial_stage import AdversarialSettings, adversarial_stage
from sa3_engine.training.autoencoder_stage import METRICS_FILE, AutoencoderSettings, AutoencoderStage
from sa3_engine.training.clips import list_clips, split_holdout
from sa3_engine.training.distill_stage import DistillSettings, distill_stage
from sa3_engine.training.encode import encode_folder
from sa3_engine.training.flow_stage import FlowSettings, dit_stage
from sa3_engine.training.latents import LatentDataset
from sa3_engine.training.lora_stage import lora_stage
from sa3_engine.training.runner import LOG, run
from sa3_engine.weights.tiny import tiny_config, write_tiny_text_encoder

SR = 44100
SMALL = {"batch_size": 2, "max_frames": 8, "silence_seconds": 0.2}


def write_clips(folder, count=5):
    rng = np.random.default_rng(0)
    for i in range(count):
        n = int(SR * (0.4 + 0.25 * i))
        t = np.arange(n) / SR
        tone = np.sin(2 * np.pi * (110 * (i + 1)) * t) * 0.3 + rng.normal(0, 0.02, n)
        write_wav(folder / f"{i:08d}.wav", np.stack([tone, tone * 0.8]).astype(np.float32), SR, bit_depth="float")
        write_json(folder / f"{i:08d}.json", {"prompt": f"TrackType: Music, tone {i}", "captions": [f"tone {i}"]})
    return folder


def quiet_run(stage, run_dir, steps, **kw):
    return run(stage, run_dir, steps, stream=None, log_every=1, **kw)


def losses(run_dir):
    return [json.loads(line)["loss"] for line in (run_dir / LOG).read_text().splitlines()]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("recipe")
    (root / "clips").mkdir()
    clips = write_clips(root / "clips")
    config = tiny_config("rectified_flow")
    text_encoder = write_tiny_text_encoder(root / "t5")
    train, holdout = split_holdout(list_clips(clips), 1)
    ae = quiet_run(AutoencoderStage(config, train, holdout, AutoencoderSettings(batch_size=2, crop_frames=2)),
                   root / "ae", 3)
    latents = encode_folder(load_autoencoder(ae), clips, root / "latents.safetensors")
    data = LatentDataset.load(latents)
    base = quiet_run(dit_stage(config, ae, data, text_encoder, FlowSettings(**SMALL)), root / "dit", 3)
    student = quiet_run(distill_stage(base, data, DistillSettings(**SMALL, teacher_steps=2)), root / "distill", 2)
    final = quiet_run(adversarial_stage(student, base, data, AdversarialSettings(**SMALL)), root / "adv", 2)
    lora = quiet_run(lora_stage(final, data, FlowSettings(**SMALL), rank=2), root / "lora", 2,
                     out=root / "lora" / "adapter.safetensors")
    return {"root": root, "ae": ae, "latents": latents, "base": base, "student": student, "final": final,
            "lora": lora, "clips": clips}


def test_autoencoder_stage_writes_a_loadable_autoencoder_with_holdout_metrics(recipe):
    metrics = json.loads((recipe["ae"] / METRICS_FILE).read_text())
    assert metrics["clips"] == 1 and math.isfinite(metrics["si_sdr_db"]) and math.isfinite(metrics["mrstft"])
    ae = load_autoencoder(recipe["ae"])
    assert torch.isfinite(ae.decode(ae.encode(torch.zeros(1, 2, 8192)))).all()
    assert all(math.isfinite(x) for x in losses(recipe["root"] / "ae"))


def test_encode_writes_one_latent_clip_per_audio_file_with_its_captions(recipe):
    data = LatentDataset.load(recipe["latents"])
    assert len(data) == 5 and data.channels == 16
    assert data.captions[0] == ["TrackType: Music, tone 0", "tone 0"]
    assert data.clip(4).shape[1] == int(SR * 1.4) // 4096
    assert data.seconds[1] == pytest.approx(int(SR * 0.65) / SR)


@pytest.mark.parametrize(("stage", "objective"), [("base", "rectified_flow"), ("student", "rf_denoiser"),
                                                  ("final", "rf_denoiser")])
def test_each_dit_stage_writes_a_folder_the_pipeline_loads_and_generates_from(recipe, stage, objective):
    config = json.loads((recipe[stage] / "model_config.json").read_text())
    assert config["model"]["diffusion"]["diffusion_objective"] == objective
    pipe = Pipeline.load(str(recipe[stage]))
    out = pipe.generate("TrackType: Music, tone 2", duration=1.3, seed=1, steps=2)[0]
    assert out.audio.shape == (2, round(1.3 * SR)) and np.isfinite(out.audio).all()


def test_lora_file_is_in_the_official_format_and_stacks_in_the_pipeline(recipe):
    adapter = read_adapter_file(recipe["lora"])
    assert adapter.config.adapter_type == "lora" and adapter.config.rank == 2
    assert any(name.startswith("model.transformer.layers.0.") for name in adapter.layers)
    second = recipe["root"] / "second.safetensors"
    shutil.copy(recipe["lora"], second)
    pipe = Pipeline.load(str(recipe["final"]))
    out = pipe.generate("tone 1", duration=0.7, seed=3, loras=[(str(recipe["lora"]), 1.0), (str(second), 0.5)])[0]
    assert out.audio.shape == (2, round(0.7 * SR)) and np.isfinite(out.audio).all()


def test_a_run_folder_with_a_checkpoint_is_not_overwritten_without_resume(recipe):
    data = LatentDataset.load(recipe["latents"])
    with pytest.raises(FileExistsError, match="--resume"):
        quiet_run(lora_stage(recipe["final"], data, FlowSettings(**SMALL), rank=2), recipe["root"] / "lora", 3)
