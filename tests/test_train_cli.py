"""``sa3 train``: the whole recipe from the command line on tiny data, a couple of steps per stage."""

import json

import numpy as np

from sa3_engine.cli.main import main
from sa3_engine.generation.pipeline import Pipeline
from sa3_engine.weights.tiny import write_tiny_text_encoder
from tests.test_training_stages import write_clips

FLOW = ["--batch-size", "2", "--max-frames", "6", "--silence-seconds", "0.2", "--log-every", "1"]


def test_the_recipe_runs_from_its_commands(tmp_path, capsys):
    clips = tmp_path / "clips"
    clips.mkdir()
    write_clips(clips, 4)
    t5 = write_tiny_text_encoder(tmp_path / "t5")
    r = tmp_path
    assert main(["train", "autoencoder", "--config", "tiny", "--data", str(clips), "--run", str(r / "ae"),
                 "--steps", "2", "--batch-size", "1", "--crop-frames", "2", "--holdout", "1"]) == 0
    assert "si_sdr_db" in json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["train", "encode", "--autoencoder", str(r / "ae/model"), "--data", str(clips),
                 "--out", str(r / "lat.safetensors")]) == 0
    lat = ["--latents", str(r / "lat.safetensors")]
    assert main(["train", "dit", "--config", "tiny", "--autoencoder", str(r / "ae/model"), "--text-encoder", str(t5),
                 *lat, "--run", str(r / "dit"), "--steps", "2", *FLOW]) == 0
    assert main(["train", "distill", "--teacher", str(r / "dit/model"), *lat, "--run", str(r / "dis"),
                 "--steps", "1", "--teacher-steps", "2", *FLOW]) == 0
    assert main(["train", "adversarial", "--student", str(r / "dis/model"), "--base", str(r / "dit/model"), *lat,
                 "--run", str(r / "adv"), "--steps", "1", *FLOW]) == 0
    assert main(["train", "lora", "--model", str(r / "adv/model"), "--data", str(clips), "--rank", "2",
                 "--run", str(r / "lora"), "--steps", "1", *FLOW]) == 0
    assert main(["train", "lora", "--model", str(r / "adv/model"), "--data", str(clips), "--rank", "2",
                 "--run", str(r / "lora"), "--steps", "1", *FLOW]) == 2  # refuses: a checkpoint is there
    assert main(["train", "lora", "--model", str(r / "adv/model"), "--data", str(clips), "--rank", "2",
                 "--run", str(r / "lora"), "--steps", "2", "--resume", *FLOW]) == 0
    steps = [json.loads(line)["step"] for line in (r / "lora/log.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    out = Pipeline.load(str(r / "adv/model")).generate("tone 1", duration=0.5, seed=0,
                                                        loras=[(str(r / "lora/lora.safetensors"), 1.0)])[0]
    assert out.audio.shape == (2, 22050) and np.isfinite(out.audio).all()
