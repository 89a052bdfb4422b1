"""Stage 3: adversarial post-training (after ARC: relativistic + contrastive), giving an ``rf_denoiser``.

Generator: the stage-2 student. From real latents noised to a level of the 8-step ping-pong grid it makes
a one-step estimate x_t - t v. Discriminator: the stage-1 DiT and its conditioner heads (initialised from
the stage-1 model, trained on) plus one linear head per layer on the latent tokens' hidden states, averaged
over valid frames. Real and generated latents are both re-noised to a shared t ~ truncated logit-normal
before the discriminator sees them. Losses (relativistic, softplus):
- discriminator: L_R(real > fake) + w_c L_C(real with its prompt > real with another item's prompt);
- generator: L_R(fake > real) + w_mse masked MSE(estimate, real) (a small anchor; the paper's CLAP term
  has no model here and is left out).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sa3_engine.models.config import load_config
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.sampling.schedules import build_schedule, sampling_shift
from sa3_engine.training.conditioning import Prompts, run_dit, text_encoder_for
from sa3_engine.training.flow_stage import FlowSettings, check_latents, dit_and_heads, prepare
from sa3_engine.training.folders import (
    text_encoder_folder,
    trainable_model,
    with_objective,
    write_model_folder,
)
from sa3_engine.training.latents import LatentDataset
from sa3_engine.training.rectified_flow import column, masked_mse, noised, trunc_logit_normal
from sa3_engine.training.runner import adamw, generator_for


@dataclass
class AdversarialSettings(FlowSettings):
    learning_rate: float = 2e-5
    critic_learning_rate: float = 2e-5
    contrastive_weight: float = 1.0
    mse_weight: float = 0.1
    pingpong_steps: int = 8  # the generator's noise levels: this sampling grid's (nonzero) points


class DiTDiscriminator(nn.Module):
    """A stage-1 model's DiT + conditioner heads, and a linear head per layer: one logit per item."""

    def __init__(self, base: SA3Model):
        super().__init__()
        self.base = base
        width = base.dit.transformer.project_in.out_features
        self.heads = nn.ModuleList(nn.Linear(width, 1) for _ in base.dit.transformer.layers)
        for head in self.heads:
            nn.init.normal_(head.weight, std=0.01)
            nn.init.zeros_(head.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond, valid: torch.Tensor) -> torch.Tensor:
        _, hidden = run_dit(self.base, x, t, cond, valid, return_hidden=True)
        tokens = hidden[:, :, self.base.dit.transformer.num_memory_tokens :]  # (depth, B, T, E)
        logits = sum(head(tokens[i]).squeeze(-1) for i, head in enumerate(self.heads))  # (B, T)
        weights = valid.to(logits.dtype)
        return (logits * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def relativistic(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """mean softplus(-(first - second)): low when ``first`` scores above ``second``."""
    return F.softplus(-(first - second)).mean()


class AdversarialStage:
    def __init__(self, generator_model: SA3Model, critic: DiTDiscriminator, data: LatentDataset, prompts: Prompts,
                 settings: AdversarialSettings, exporter):
        self.g, self.critic, self.data, self.prompts, self.settings = generator_model, critic, data, prompts, settings
        self.exporter = exporter
        self.g_trainable = dit_and_heads(generator_model)
        self.g_params = [p for p in self.g_trainable.parameters() if p.requires_grad]
        self.d_params = [p for p in critic.parameters() if p.requires_grad]
        self.g_optimizer = adamw(self.g_params, settings.learning_rate, settings.betas, settings.weight_decay)
        self.d_optimizer = adamw(self.d_params, settings.critic_learning_rate, settings.betas, settings.weight_decay)
        self.generator = generator_for(settings.seed)
        grid = build_schedule(settings.pingpong_steps, 1.0, shift=sampling_shift(generator_model.config))
        self.levels = grid[:-1]

    def step(self) -> dict[str, float]:
        s, gen = self.settings, self.generator
        p = prepare(self.data, s, gen, dropout=0.0)
        x0, valid = p.batch.x0, p.batch.valid
        t_g = self.levels[torch.randint(len(self.levels), (len(x0),), generator=gen)]
        x_t = noised(x0, torch.randn(x0.shape, generator=gen), t_g)
        fake = x_t - column(t_g) * run_dit(self.g, x_t, t_g, p.cond_for(self.g, self.prompts), valid)
        t_d = trunc_logit_normal(len(x0), gen)
        renoise = torch.randn(x0.shape, generator=gen)
        shuffled = p.batch.prompts[1:] + p.batch.prompts[:1]

        cond = p.cond_for(self.critic.base, self.prompts)
        real_in = noised(x0, renoise, t_d)
        d_real = self.critic(real_in, t_d, cond, valid)
        d_fake = self.critic(noised(fake.detach(), renoise, t_d), t_d, cond, valid)
        d_mismatch = self.critic(real_in, t_d, p.cond_for(self.critic.base, self.prompts, shuffled), valid)
        adversarial_d = relativistic(d_real, d_fake)
        contrastive = relativistic(d_real, d_mismatch)
        self._update(self.d_optimizer, self.d_params, adversarial_d + s.contrastive_weight * contrastive)

        cond = p.cond_for(self.critic.base, self.prompts)
        with torch.no_grad():
            d_real = self.critic(real_in, t_d, cond, valid)
        adversarial_g = relativistic(self.critic(noised(fake, renoise, t_d), t_d, cond, valid), d_real)
        anchor = masked_mse(fake, x0, valid)
        g_loss = adversarial_g + s.mse_weight * anchor
        self._update(self.g_optimizer, self.g_params, g_loss)
        return {"loss": g_loss.item(), "g_relativistic": adversarial_g.item(), "mse": anchor.item(),
                "d_relativistic": adversarial_d.item(), "d_contrastive": contrastive.item()}

    def _update(self, optimizer: torch.optim.Optimizer, params: list, loss: torch.Tensor) -> None:
        self.g_optimizer.zero_grad(set_to_none=True)
        self.d_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, self.settings.grad_clip)
        optimizer.step()

    def state_dict(self) -> dict:
        return {"generator_model": self.g_trainable.state_dict(), "critic": self.critic.state_dict(),
                "g_optimizer": self.g_optimizer.state_dict(), "d_optimizer": self.d_optimizer.state_dict(),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.g_trainable.load_state_dict(state["generator_model"])
        self.critic.load_state_dict(state["critic"])
        self.g_optimizer.load_state_dict(state["g_optimizer"])
        self.d_optimizer.load_state_dict(state["d_optimizer"])
        self.generator.set_state(state["generator"])

    def export(self, folder: Path) -> Path:
        return self.exporter(Path(folder))


def adversarial_stage(student_folder: Path, base_folder: Path, data: LatentDataset,
                      settings: AdversarialSettings) -> AdversarialStage:
    """Generator from the stage-2 folder, discriminator from the stage-1 folder."""
    student = trainable_model(student_folder)
    check_latents(student, data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        critic = DiTDiscriminator(trainable_model(base_folder))
    encoder_folder = text_encoder_folder(student_folder)
    prompts = Prompts(student, text_encoder_for(student, encoder_folder))
    config = with_objective(load_config(student_folder), "rf_denoiser")
    return AdversarialStage(student, critic, data, prompts, settings,
                            lambda folder: write_model_folder(student, config, folder, encoder_folder))
