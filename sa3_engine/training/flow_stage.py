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
from sa3_engine.training.conditioning import Prompts, condition, run_dit, text_encoder_for
from sa3_engine.training.coupling import pair_noise
from sa3_engine.training.folders import (
    full_config_with_autoencoder,
    model_with_autoencoder,
    with_objective,
    write_model_folder,
)
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
from sa3_engine.training.runner import LossStage
from sa3_engine.weights.registry import text_encoder_subfolder


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
    """A batch with everything drawn for it: inpainting masks, CFG dropout, the shift's lengths."""

    batch: LatentBatch
    keep: torch.Tensor  # (B, 1, T) float, 1 = context
    drop: torch.Tensor  # (B,) bool: cross-attention context dropped
    lengths: torch.Tensor  # (B,) effective lengths for the shift (from each clip's duration)

    def cond_for(self, model: SA3Model, prompts: Prompts, texts: list[str] | None = None):
        """The conditioning through ``model``'s heads (``texts`` instead of the batch's prompts if given)."""
        texts = self.batch.prompts if texts is None else texts
        return condition(model, prompts, texts, self.batch.seconds, self.keep, self.batch.x0, self.drop)


def prepare(data: LatentDataset, settings: FlowSettings, generator: torch.Generator, dropout: float) -> Prepared:
    batch = draw_batch(data, settings.batch_size, settings.max_frames, generator, settings.silence_seconds)
    keep, _ = inpaint_masks(batch.lengths, batch.x0.shape[-1], generator, settings.mask_probs)
    drop = torch.rand(len(batch.prompts), generator=generator) < dropout
    return Prepared(batch, keep, drop, effective_lengths(batch.seconds, data.sample_rate, data.downsampling))


def sample_times(prepared: Prepared, settings: FlowSettings, generator: torch.Generator) -> torch.Tensor:
    t = trunc_logit_normal(len(prepared.lengths), generator)
    return length_shift(t, prepared.lengths) if settings.length_shift else t


def flow_batch_loss(model: SA3Model, data: LatentDataset, prompts: Prompts, settings: FlowSettings,
                    generator: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    p = prepare(data, settings, generator, settings.cfg_dropout)
    x0, valid = p.batch.x0, p.batch.valid
    noise = torch.randn(x0.shape, generator=generator)
    noise = pair_noise(x0, noise, valid, settings.pairing)
    t = sample_times(p, settings, generator)
    v = run_dit(model, noised(x0, noise, t), t, p.cond_for(model, prompts), valid)
    return flow_loss(v, velocity_target(x0, noise), valid, p.keep[:, 0] > 0, settings.context_weight)


def dit_and_heads(model: SA3Model) -> nn.Module:
    """What stage 1 trains: the DiT and the conditioner heads (the autoencoder stays frozen)."""
    return nn.ModuleDict({"model": model.model, "conditioner": model.conditioner})


def check_latents(model: SA3Model, data: LatentDataset) -> None:
    if data.channels != model.io_channels:
        raise ValueError(f"the latent dataset has {data.channels} channels, the model {model.io_channels}: "
                         "encode it with this model's autoencoder")


def dit_stage(config: dict, autoencoder: Path, data: LatentDataset, text_encoder: Path | None,
              settings: FlowSettings) -> LossStage:
    """Stage 1 from scratch: a new DiT (``config``'s sizes) around the trained autoencoder folder."""
    config = with_objective(full_config_with_autoencoder(config, autoencoder), "rectified_flow")
    needs = text_encoder_subfolder(config)
    if needs is not None and (text_encoder is None or not Path(text_encoder).is_dir()):
        raise FileNotFoundError(f"this config's text conditioner needs its encoder folder ({needs}), which the "
                                f"written model must contain: pass --text-encoder (got {text_encoder})")
    model = model_with_autoencoder(config, autoencoder, settings.seed)
    model.train()
    model.pretransform.requires_grad_(False).eval()
    check_latents(model, data)
    prompts = Prompts(model, text_encoder_for(model, text_encoder))
    return flow_stage(model, dit_and_heads(model), data, prompts, settings,
                      lambda folder: write_model_folder(model, config, folder, text_encoder))


def flow_stage(model: SA3Model, trainable: nn.Module, data: LatentDataset, prompts: Prompts,
               settings: FlowSettings, exporter: Callable[[Path], Path]) -> LossStage:
    """A stage minimising the flow loss of ``model`` over ``trainable``'s parameters."""
    return LossStage(trainable, lambda generator: flow_batch_loss(model, data, prompts, settings, generator),
                     exporter, **optimizer_options(settings))


def optimizer_options(settings: FlowSettings) -> dict:
    return {"seed": settings.seed, "learning_rate": settings.learning_rate, "betas": settings.betas,
            "weight_decay": settings.weight_decay, "grad_clip": settings.grad_clip}
