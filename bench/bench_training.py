"""Seconds per training step of every stage, for a model config (default: the small recipe config).

Random weights and random latents (the cost does not depend on their values); the text encoder is the
tiny random T5Gemma (the same shape of work as the real conditioner's encoder, which is frozen). Prints
one JSON line per stage and an estimate of a whole recipe at the given step counts.

    PYTHONPATH=. python bench/bench_training.py [--config PATH] [--threads 2] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sa3_engine.audio import write_json, write_wav
from sa3_engine.models.config import load_config
from sa3_engine.training.adversarial_stage import AdversarialSettings, adversarial_stage
from sa3_engine.training.autoencoder_stage import AutoencoderSettings, AutoencoderStage, build_autoencoder
from sa3_engine.training.clips import list_clips
from sa3_engine.training.distill_stage import DistillSettings, distill_stage
from sa3_engine.training.flow_stage import FlowSettings, dit_stage
from sa3_engine.training.folders import write_autoencoder_folder
from sa3_engine.training.latents import LatentDataset
from sa3_engine.weights.tiny import write_tiny_text_encoder

CONFIG = Path(__file__).resolve().parents[1] / "sa3_engine/training/configs/small.json"
# The recipe's step counts (docs/training.md), for the whole-run estimate.
RECIPE_STEPS = {"autoencoder": 3000, "dit": 6000, "distill": 600, "adversarial": 400}


def timed(stage, steps: int) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) per step. On a shared machine the CPU time is the better
    measure of the work: wall time also counts waiting for cores other processes hold."""
    stage.step()  # warm-up
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        stage.step()
    return (time.perf_counter() - wall) / steps, (time.process_time() - cpu) / steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", default=str(CONFIG))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--teacher-steps", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    root = Path(tempfile.mkdtemp(prefix="bench-training-"))
    clips = root / "clips"
    clips.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        write_wav(clips / f"{i}.wav", (rng.normal(0, 0.1, (2, 44100 * 4))).astype(np.float32), 44100, "float")
        write_json(clips / f"{i}.json", {"prompt": "TrackType: Music, drum loop, 120 BPM, C minor"})
    ae_settings = AutoencoderSettings(stft_start=0)  # the post-warm-up (dearer) step
    results = {"autoencoder": timed(AutoencoderStage(config, list_clips(clips), [], ae_settings), args.steps)}
    ae = write_autoencoder_folder(build_autoencoder(config, 0), config, root / "ae")
    text = write_tiny_text_encoder(root / "t5")
    channels, frames = int(config["model"]["io_channels"]), 300
    lengths = [frames] * 16
    data = LatentDataset(torch.randn(channels, frames * 16), torch.tensor([0, *lengths]).cumsum(0),
                         torch.zeros(channels), [[f"TrackType: Music, loop {i}, 120 BPM"] for i in range(16)],
                         [frames * 4096 / 44100] * 16, 44100, 4096)
    flow = FlowSettings()
    base_stage = dit_stage(config, ae, data, text, flow)
    results["dit"] = timed(base_stage, args.steps)
    base = base_stage.export(root / "base")
    results["distill"] = timed(distill_stage(base, data, DistillSettings(teacher_steps=args.teacher_steps)), 1)
    results["adversarial"] = timed(adversarial_stage(base, base, data, AdversarialSettings()), args.steps)
    for name, (wall, cpu) in results.items():
        print(json.dumps({"stage": name, "wall_seconds_per_step": round(wall, 3),
                          "cpu_seconds_per_step": round(cpu, 3), "threads": args.threads}))
    total = sum(results[k][1] * RECIPE_STEPS[k] for k in RECIPE_STEPS)
    print(json.dumps({"recipe_steps": RECIPE_STEPS, "estimated_cpu_hours": round(total / 3600, 2),
                      "load_average": os.getloadavg()[0],
                      "settings": {"ae_batch": ae_settings.batch_size, "ae_crop_frames": ae_settings.crop_frames,
                                   "flow_batch": flow.batch_size, "max_frames": flow.max_frames,
                                   "teacher_steps": args.teacher_steps}}))


if __name__ == "__main__":
    main()
