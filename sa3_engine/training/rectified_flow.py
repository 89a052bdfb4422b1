"""The rectified-flow objective of SA3 stage 1 (and LoRA): times, the per-item length shift, noising,
the masked velocity loss.

Conventions as at inference: t = 1 is noise, t = 0 is data, x_t = (1 - t) x0 + t eps, the network
predicts v = eps - x0 and the denoised estimate is x0_hat = x_t - t v.
"""

from __future__ import annotations

import math

import torch

# Official wrapper defaults (REFERENCE 6.5, 7): trunc_logit_normal with left_trunc 0.075; the "full" shift.
LEFT_TRUNCATION = 0.075
SHIFT_BASE, SHIFT_MAX, SHIFT_MIN_LENGTH, SHIFT_MAX_LENGTH = 0.5, 1.15, 256, 4096


def trunc_logit_normal(batch: int, generator: torch.Generator, left: float = LEFT_TRUNCATION) -> torch.Tensor:
    """(batch,) t in (0, 1]: a logit-normal sample s truncated to [left, 1), rescaled, then t = 1 - s'.

    s = sigmoid(ndtri(Phi(logit(left)) + u (1 - Phi(logit(left))))) with u ~ U[0, 1) (the CDF of a standard
    normal draw), s' = (s - left)/(1 - left). Mass sits around t = 0.5, none below t = 0 or above 1.
    """
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    return trunc_logit_normal_from_uniform(u, left).float()


def trunc_logit_normal_from_uniform(u: torch.Tensor, left: float = LEFT_TRUNCATION) -> torch.Tensor:
    low = torch.special.ndtr(torch.tensor(math.log(left / (1 - left)), dtype=u.dtype))
    s = torch.sigmoid(torch.special.ndtri(low + u * (1 - low)))
    return 1 - (s - left) / (1 - left)


def length_shift(t: torch.Tensor, lengths: torch.Tensor, base: float = SHIFT_BASE, top: float = SHIFT_MAX,
                 min_length: float = SHIFT_MIN_LENGTH, max_length: float = SHIFT_MAX_LENGTH) -> torch.Tensor:
    """Per item: t' = a t / (1 + (a - 1) t), a = exp(base + (top - base) (L - Lmin)/(Lmax - Lmin)), L clamped.

    The official "full" distribution shift (``sampling.schedules.full_shift``) applied element-wise:
    longer items (more redundant latents) are pushed towards noise.
    """
    length = lengths.to(torch.float64).clamp(min_length, max_length)
    alpha = torch.exp(base + (top - base) * (length - min_length) / (max_length - min_length))
    t64 = t.to(torch.float64)
    return (alpha * t64 / (1 + (alpha - 1) * t64)).to(t.dtype)


def effective_lengths(seconds_total: torch.Tensor, sample_rate: int, downsampling: int) -> torch.Tensor:
    """L_i = ceil(int(seconds_total * sr) / downsampling): the shift's length, from the file's duration."""
    samples = torch.floor(seconds_total.to(torch.float64) * sample_rate)
    return torch.ceil(samples / downsampling).to(torch.int64)


def column(t: torch.Tensor) -> torch.Tensor:
    return t.view(-1, 1, 1)


def noised(x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps, t per item."""
    return (1 - column(t)) * x0 + column(t) * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    return noise - x0


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the frames where ``mask`` (B, T) is true, per item, then averaged over items
    that have any such frame (0 when none has): short items weigh as much as long ones."""
    weights = mask.to(prediction.dtype)[:, None, :]
    per_item = ((prediction - target) ** 2 * weights).sum(dim=(1, 2))
    counts = weights.sum(dim=(1, 2)) * prediction.shape[1]
    present = counts > 0
    if not bool(present.any()):
        return prediction.sum() * 0
    return (per_item[present] / counts[present]).mean()


def flow_loss(v: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, keep: torch.Tensor,
              context_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """Stage-1 loss: MSE on generated frames (valid and not kept) + ``context_weight`` x MSE on kept frames.

    valid (B, T): the attention mask (real audio plus the silence extension); keep (B, T): the inpainting
    context (1 = given to the model). As the official wrapper's ``mask_loss_weight`` term.
    """
    generate = masked_mse(v, target, valid & ~keep)
    context = masked_mse(v, target, valid & keep)
    return generate + context_weight * context, {"flow": generate.item(), "context": context.item()}
