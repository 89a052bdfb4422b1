"""Stage 2: distillation warm-up. A student (initialised from the stage-1 model) learns to jump from any
state of its frozen teacher's few-step CFG trajectory to that trajectory's end point.

Per step: a batch as in stage 1 (inpainting masks included, no CFG dropout), a teacher trajectory from
fresh noise with DPM++ (or Euler) and CFG on the model's sampling schedule, one trajectory state per item
drawn at random, and the MSE between the student's one-step estimate x_t - t v and the end point. CFG is
absorbed: the student is sampled without it (``rf_denoiser``, ping-pong). Trajectories are made online.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from sa3_engine.models.config import load_config
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.sampling import SAMPLERS
from sa3_engine.sampling.guidance import guided_model
from sa3_engine.sampling.schedules import build_schedule, sampling_shift
from sa3_engine.training.conditioning import Prompts, run_dit, text_encoder_for
from sa3_engine.training.flow_stage import (
    FlowSettings,
    check_latents,
    dit_and_heads,
    optimizer_options,
    prepare,
)
from sa3_engine.training.folders import (
    text_encoder_folder,
    trainable_model,
    with_objective,
    write_model_folder,
)
from sa3_engine.training.latents import LatentDataset
from sa3_engine.training.rectified_flow import column, masked_mse
from sa3_engine.training.runner import LossStage


@dataclass
class DistillSettings(FlowSettings):
    learning_rate: float = 1e-4
    teacher_sampler: str = "dpmpp"  # the paper's teacher: 15 DPM++ steps, CFG 5
    teacher_steps: int = 15
    teacher_cfg: float = 5.0


@torch.no_grad()
def teacher_trajectory(teacher: SA3Model, cond, valid: torch.Tensor, noise: torch.Tensor, lengths: torch.Tensor,
                       settings: DistillSettings) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """(states x_i, their times (B, steps), end point) of the teacher's guided sampler from ``noise``."""

    def dit(x, t, cross, global_, local, padding_mask):
        return teacher.dit(x, t, cross, global_, local, padding_mask)

    model = guided_model(dit, cond.cross_attn_cond, cond.global_cond, cond.local_add_cond, valid,
                         cfg_scale=settings.teacher_cfg)
    sigmas = build_schedule(settings.teacher_steps, 1.0, lengths=lengths, shift=sampling_shift(teacher.config))
    states, times = [], []

    def keep(step: dict) -> None:
        states.append(step["x"].clone())
        times.append(step["t"].clone())

    end = SAMPLERS[settings.teacher_sampler](model, noise, sigmas, callback=keep)
    return states, torch.stack(times, dim=1), end


def distill_loss(student: SA3Model, teacher: SA3Model, data: LatentDataset, prompts: Prompts,
                 settings: DistillSettings, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    p = prepare(data, settings, generator, dropout=0.0)
    valid = p.batch.valid
    noise = torch.randn(p.batch.x0.shape, generator=generator)
    states, times, end = teacher_trajectory(teacher, p.cond_for(teacher, prompts), valid, noise, p.lengths,
                                            settings)
    pick = torch.randint(len(states), (len(valid),), generator=generator)
    rows = torch.arange(len(valid))
    x_t = torch.stack(states)[pick, rows]
    t = times[rows, pick]
    estimate = x_t - column(t) * run_dit(student, x_t, t, p.cond_for(student, prompts), valid)
    loss = masked_mse(estimate, end, valid)
    return loss, {"end_point_mse": loss.item()}


def distill_stage(teacher_folder: Path, data: LatentDataset, settings: DistillSettings) -> LossStage:
    if settings.teacher_sampler not in ("dpmpp", "euler"):
        raise ValueError(f"teacher sampler: expected dpmpp or euler, got {settings.teacher_sampler!r}")
    teacher = SA3Model.from_pretrained(teacher_folder)
    student = trainable_model(teacher_folder)
    check_latents(student, data)
    encoder_folder = text_encoder_folder(teacher_folder)
    prompts = Prompts(student, text_encoder_for(student, encoder_folder))
    config = with_objective(load_config(teacher_folder), "rf_denoiser")
    return LossStage(dit_and_heads(student),
                     lambda generator: distill_loss(student, teacher, data, prompts, settings, generator),
                     lambda folder: write_model_folder(student, config, folder, encoder_folder),
                     **optimizer_options(settings))
