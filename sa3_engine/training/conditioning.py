"""Turning a latent batch into the DiT's inputs during training: prompts, duration, inpainting context,
and classifier-free-guidance dropout.

The text encoder is whatever the model's prompt conditioner names in its config (T5Gemma from a folder
or MiniLM from its package: a config change, not a code change here): it is
frozen and only turns prompts into (hidden states, mask). Without one, every prompt is empty (all
positions padding), which trains an unconditional-prompt model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from sa3_engine.models.conditioners import TEXT_ENCODER_DIMS, DiTConditioning, TextConditioner
from sa3_engine.models.prompt_encoders import open_text_encoder
from sa3_engine.models.sa3 import SA3Model

DURATION_ID = "seconds_total"


def text_encoder_for(model: SA3Model, folder: str | Path | None):
    """The frozen encoder the model's prompt conditioner names in its config (``minilm`` from its package,
    T5Gemma from ``folder``); None without one: every prompt is then empty."""
    return open_text_encoder(model.conditioner.conditioners.values(), folder)


class Prompts:
    """prompts -> (hidden (B, S, D), mask (B, S)) for the model's text conditioner."""

    def __init__(self, model: SA3Model, encoder=None):
        heads = [(k, h) for k, h in model.conditioner.conditioners.items() if isinstance(h, TextConditioner)]
        if len(heads) != 1:
            raise ValueError(f"expected one text conditioner, found {len(heads)}")
        self.text_id, head = heads[0]
        self.max_length, self.width = head.max_length, TEXT_ENCODER_DIMS[head.model_name]
        self.encoder = encoder

    def __call__(self, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.encoder is None:
            return (torch.zeros(len(prompts), self.max_length, self.width),
                    torch.zeros(len(prompts), self.max_length, dtype=torch.bool))
        return self.encoder.encode(list(prompts), self.max_length)


def condition(model: SA3Model, prompts: Prompts, texts: list[str], seconds: torch.Tensor, keep: torch.Tensor,
              x0: torch.Tensor, drop: torch.Tensor | None = None) -> DiTConditioning:
    """The DiT conditioning of a batch; ``keep`` (B, 1, T) is the inpainting mask (1 = context), ``drop``
    (B,) bool zeroes the whole cross-attention context of those items (text and duration token), as the
    official CFG dropout does; the global (duration) condition is never dropped."""
    hidden, mask = prompts(texts)
    inputs = {prompts.text_id: (hidden, mask), DURATION_ID: seconds,
              "inpaint_mask": keep, "inpaint_masked_input": x0 * keep}
    wanted = set(model.conditioner.conditioners) | set(model.layout.local_add_ids)
    cond = model.conditioning({k: v for k, v in inputs.items() if k in wanted})
    if drop is not None and cond.cross_attn_cond is not None and bool(drop.any()):
        cond.cross_attn_cond = torch.where(drop[:, None, None], torch.zeros_like(cond.cross_attn_cond),
                                           cond.cross_attn_cond)
    return cond


def run_dit(model: SA3Model, x: torch.Tensor, t: torch.Tensor, cond: DiTConditioning, valid: torch.Tensor,
            **kwargs):
    """The DiT on one batch with true padding masking."""
    return model.dit(x, t, cond.cross_attn_cond, cond.global_cond, cond.local_add_cond, valid, **kwargs)
