"""Stage 1 (and LoRA): rectified-flow training of the DiT on pre-encoded latents.

One step: a variable-length batch (right padding with the silence latent, silence extension), inpainting
masks (80/10/10), CFG dropout, truncated logit-normal t shifted per item by its length, noise paired to the
data by minibatch OT, then the masked velocity MSE plus the context term (``rectified_flow``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from sa3_engine.models.sa3 import SA3Model
from sa3_engine.training.conditioning import Prompts, condition, run_dit
from sa3_engine.training.coupling import pair_noise
from sa3_engine.training.latents import LatentBatch, LatentDataset, draw_batch
from sa3_engine.training.masks import DEFAULT_MASK_PROBS, inpaint_masks
from sa3_engine.training.rectified_flow import (
    effective_lengths,
    flow_loss,
    length_shift,
    noised,
    trunc_logit_normal,
    velocity_target,
)
from sa3_engine.training.runner import generator_for


@dataclass
class FlowSettings:
    batch_size: int = 8
    max_frames: int = 128  # crop length in latent frames (~11.9 s)
    learning_rate: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    cfg_dropout: float = 0.1
    mask_probs: tuple[float, float, float] = DEFAULT_MASK_PROBS
    silence_seconds: float = 4.0  # mean of the exponential silence extension
    pairing: str = "sinkhorn"  # minibatch OT: sinkhorn | hungarian | none
    context_weight: float = 1.0  # the official mask_loss_weight
    length_shift: bool = True
    seed: int = 0


@dataclass
class Prepared:
    """A batch with everything drawn for it: masks, dropout, conditioning."""

    batch: LatentBatch
    keep: torch.Tensor  # (B, 1, T) float, 1 = context
    cond: object  # DiTConditioning
    lengths: torch.Tensor  # (B,) effective lengths for the shift (from each clip's duration)


def prepare(model: SA3Model, data: LatentDataset, prompts: Prompts, settings: FlowSettings,
            generator: torch.Generator, dropout: float) -> Prepared:
    batch = draw_batch(data, settings.batch_size, settings.max_frames, generator, settings.silence_seconds)
    keep, _ = inpaint_masks(batch.lengths, batch.x0.shape[-1], generator, settings.mask_probs)
    drop = torch.rand(len(batch.prompts), generator=generator) < dropout
    cond = condition(model, prompts, batch.prompts, batch.seconds, keep, batch.x0, drop)
    lengths = effective_lengths(batch.seconds, data.sample_rate, data.downsampling)
    return Prepared(batch, keep, cond, lengths)


def sample_times(prepared: Prepared, settings: FlowSettings, generator: torch.Generator) -> torch.Tensor:
    t = trunc_logit_normal(len(prepared.lengths), generator)
    return length_shift(t, prepared.lengths) if settings.length_shift else t


def flow_batch_loss(model: SA3Model, data: LatentDataset, prompts: Prompts, settings: FlowSettings,
                    generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    p = prepare(model, data, prompts, settings, generator, settings.cfg_dropout)
    x0, valid = p.batch.x0, p.batch.valid
    noise = torch.randn(x0.shape, generator=generator)
    noise = pair_noise(x0, noise, valid, settings.pairing)
    t = sample_times(p, settings, generator)
    v = run_dit(model, noised(x0, noise, t), t, p.cond, valid)
    return flow_loss(v, velocity_target(x0, noise), valid, p.keep[:, 0] > 0, settings.context_weight)


def make_optimizer(params, settings: FlowSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=settings.learning_rate, betas=settings.betas,
                             weight_decay=settings.weight_decay)


class FlowStage:
    """Trains ``trainable`` (a module whose parameters the loss reaches) on the flow loss of ``model``."""

    def __init__(self, model: SA3Model, trainable: nn.Module, data: LatentDataset, prompts: Prompts,
                 settings: FlowSettings, exporter: Callable[[Path], Path]):
        self.model, self.trainable, self.data, self.prompts = model, trainable, data, prompts
        self.settings, self.exporter = settings, exporter
        self.params = [p for p in trainable.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, settings)
        self.generator = generator_for(settings.seed)

    def step(self) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        loss, parts = flow_batch_loss(self.model, self.data, self.prompts, self.settings, self.generator)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.settings.grad_clip)
        self.optimizer.step()
        return {"loss": loss.item(), **parts, "grad_norm": norm.item()}

    def state_dict(self) -> dict:
        return {"trainable": self.trainable.state_dict(), "optimizer": self.optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.trainable.load_state_dict(state["trainable"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["generator"])

    def export(self, folder: Path) -> Path:
        return self.exporter(folder)


def dit_and_heads(model: SA3Model) -> nn.Module:
    """What stage 1 trains: the DiT and the conditioner heads (the autoencoder stays frozen)."""
    return nn.ModuleDict({"model": model.model, "conditioner": model.conditioner})
