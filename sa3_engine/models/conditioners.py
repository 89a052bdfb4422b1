"""Conditioner heads (duration, prompt) and the assembly of the DiT's conditioning inputs.

Module paths match the official checkpoints: ``Conditioner.conditioners.<id>...``, so a full checkpoint
loads as ``conditioner.conditioners.<id>...``. The text encoder itself (T5Gemma) is not part of this
module tree, as in the official code: the prompt head receives its last hidden state and attention mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sa3_engine.models.config import ConfigError, field
from sa3_engine.models.fourier import ExpoFourierFeatures

# Width of the duration's Fourier features: fixed inside the official NumberEmbedder, never in configs.
NUMBER_FOURIER_DIM = 256

# Hidden width of each supported text encoder (the official conditioner's table, plus MiniLM).
TEXT_ENCODER_DIMS = {"google/t5gemma-b-b-ul2": 768, "sentence-transformers/all-MiniLM-L6-v2": 384}
# Text conditioner ``type`` -> its encoder's model_name (minilm: the small default model's offline encoder).
TEXT_CONDITIONER_TYPES = {"t5gemma": "google/t5gemma-b-b-ul2", "minilm": "sentence-transformers/all-MiniLM-L6-v2"}

TEXT_PADDING_MODES = ("none", "zero", "learned")  # the text head's official padding_mode values

Conditioned = tuple[torch.Tensor, torch.Tensor]  # (embeddings, bool mask)


class NumberEmbedder(nn.Module):
    """Fourier features of a scalar then a Linear; the Sequential keeps the key ``embedding.1``."""

    def __init__(self, features: int, dim: int = NUMBER_FOURIER_DIM):
        super().__init__()
        self.embedding = nn.Sequential(ExpoFourierFeatures(dim), nn.Linear(dim, features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embedding(x)


class NumberConditioner(nn.Module):
    """A number (seconds_total) -> clamp to [min_val, max_val] -> [0, 1] -> one (B, 1, D) token."""

    def __init__(self, output_dim: int, min_val: float = 0.0, max_val: float = 1.0, fourier_features_type="expo"):
        super().__init__()
        if fourier_features_type != "expo":
            raise ConfigError(f"number conditioner: fourier_features_type {fourier_features_type!r} is not supported "
                              "(SA3 models use 'expo')")
        if not max_val > min_val:
            raise ConfigError(f"number conditioner: max_val ({max_val}) must exceed min_val ({min_val})")
        self.min_val, self.max_val = min_val, max_val
        self.embedder = NumberEmbedder(output_dim)

    def normalize(self, values: Sequence[float] | torch.Tensor) -> torch.Tensor:
        """(B,) float32 in [0, 1]; computed in float32 like the official list-of-floats path."""
        device = self.embedder.embedding[1].weight.device
        x = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
        x = x.clamp(self.min_val, self.max_val)
        return (x - self.min_val) / (self.max_val - self.min_val)

    def forward(self, values: Sequence[float] | torch.Tensor) -> Conditioned:
        dtype = self.embedder.embedding[1].weight.dtype
        embeds = self.embedder(self.normalize(values).to(dtype))[:, None, :]
        return embeds, torch.ones(embeds.shape[:2], dtype=torch.bool, device=embeds.device)


class TextConditioner(nn.Module):
    """The head after the text encoder: optional projection, then padding handling.

    padding_mode: "learned" replaces positions whose mask is 0 by ``padding_embedding``; "zero"
    multiplies them by 0; "none" leaves the encoder output as is.
    """

    def __init__(
        self,
        output_dim: int,
        model_name: str,
        max_length: int = 128,
        padding_mode: str = "zero",
        project_out: bool = False,
        encoder_type: str = "t5gemma",
        **source: Any,
    ):
        super().__init__()
        if model_name not in TEXT_ENCODER_DIMS:
            raise ConfigError(f"text conditioner: unknown model_name {model_name!r} "
                              f"(supported: {sorted(TEXT_ENCODER_DIMS)})")
        if padding_mode not in TEXT_PADDING_MODES:
            raise ConfigError(
                f"text conditioner: padding_mode must be one of {TEXT_PADDING_MODES}, got {padding_mode!r}"
            )
        unknown = set(source) - {"model_path", "repo_id", "subfolder", "enable_grad"}
        if unknown:
            raise ConfigError(f"text conditioner: unknown config field(s) {sorted(unknown)}")
        self.model_name, self.max_length, self.padding_mode = model_name, int(max_length), padding_mode
        self.encoder_type = encoder_type  # the config ``type``: which encoder produces this head's input
        self.source = source  # where the official loader would fetch the encoder; read by the text encoder
        dim = TEXT_ENCODER_DIMS[model_name]
        self.proj_out = nn.Linear(dim, output_dim) if (dim != output_dim or project_out) else nn.Identity()
        if padding_mode == "learned":
            self.padding_embedding = nn.Parameter(torch.randn(output_dim) * 0.02)

    def forward(self, hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> Conditioned:
        """(B, S, dim) encoder output + (B, S) mask (1 = real token) -> (B, S, output_dim), bool mask."""
        if isinstance(self.proj_out, nn.Linear):
            hidden_state = hidden_state.to(self.proj_out.weight.dtype)
        embeds = self.proj_out(hidden_state)
        mask = attention_mask.to(device=embeds.device, dtype=torch.bool)
        if self.padding_mode == "learned":
            pad = self.padding_embedding.to(embeds.dtype).expand_as(embeds)
            embeds = torch.where(mask[..., None], embeds, pad)
        elif self.padding_mode == "zero":
            embeds = embeds * mask[..., None].to(embeds.dtype)
        return embeds, mask


def build_conditioner(spec: dict, cond_dim: int, where: str) -> nn.Module:
    kind = field(spec, "type", where)
    kwargs = dict(field(spec, "config", where))
    if kind == "number":
        return NumberConditioner(cond_dim, **kwargs)
    if kind in TEXT_CONDITIONER_TYPES:
        expected = TEXT_CONDITIONER_TYPES[kind]
        if kwargs.setdefault("model_name", expected) != expected:
            raise ConfigError(f"config field {where}.config.model_name: a {kind!r} conditioner uses {expected!r}, "
                              f"got {kwargs['model_name']!r}")
        return TextConditioner(cond_dim, encoder_type=kind, **kwargs)
    raise ConfigError(f"config field {where}.type: unknown conditioner type {kind!r} "
                      f"(expected 'number', {', '.join(repr(k) for k in TEXT_CONDITIONER_TYPES)})")


class Conditioner(nn.Module):
    """All conditioner heads of one model, by id (``prompt``, ``seconds_total``)."""

    def __init__(self, conditioners: dict[str, nn.Module]):
        super().__init__()
        self.conditioners = nn.ModuleDict(conditioners)

    @classmethod
    def from_config(cls, conditioning: dict) -> Conditioner:
        """From ``model.conditioning``: every entry gets ``output_dim = cond_dim``."""
        cond_dim = int(field(conditioning, "cond_dim", "model.conditioning"))
        specs = field(conditioning, "configs", "model.conditioning")
        conditioners = {}
        for i, spec in enumerate(specs):
            where = f"model.conditioning.configs[{i}]"
            conditioners[str(field(spec, "id", where))] = build_conditioner(spec, cond_dim, where)
        return cls(conditioners)

    def forward(self, inputs: Mapping[str, Any]) -> dict[str, Conditioned]:
        """Run the heads named in ``inputs``.

        Number heads take a sequence/tensor of B floats; text heads take ``(last_hidden_state, attention_mask)``.
        """
        out = {}
        for key, value in inputs.items():
            if key not in self.conditioners:
                raise KeyError(f"no conditioner {key!r} (this model has {list(self.conditioners)})")
            head = self.conditioners[key]
            out[key] = head(*value) if isinstance(head, TextConditioner) else head(value)
        return out


@dataclass
class DiTConditioning:
    """What the DiT takes besides x, t and the padding mask (None where the model has no such input)."""

    cross_attn_cond: torch.Tensor | None  # (B, S, cond_token_dim)
    cross_attn_mask: torch.Tensor | None  # (B, S) bool; the DiT ignores it, as officially
    global_cond: torch.Tensor | None  # (B, global_cond_dim)
    local_add_cond: torch.Tensor | None  # (B, local_add_cond_dim, T)


@dataclass(frozen=True)
class ConditioningLayout:
    """Which conditioning ids feed which DiT input, from ``model.diffusion``."""

    cross_attention_ids: tuple[str, ...] = ()
    global_ids: tuple[str, ...] = ()
    local_add_ids: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, diffusion: dict) -> ConditioningLayout:
        for unsupported in ("input_concat_ids", "prepend_cond_ids", "modular_local_cond_configs"):
            if diffusion.get(unsupported):
                raise ConfigError(f"config field model.diffusion.{unsupported} is not supported by this engine")
        return cls(
            tuple(diffusion.get("cross_attention_cond_ids", [])),
            tuple(diffusion.get("global_cond_ids", [])),
            tuple(diffusion.get("local_add_cond_ids", [])),
        )

    def assemble(self, tensors: Mapping[str, Conditioned | torch.Tensor]) -> DiTConditioning:
        """Concatenate conditioned tensors as the official wrapper does.

        cross: token sequences along the sequence axis (a (B, D) entry becomes one token); global: along
        channels, then (B, 1, D) -> (B, D); local-add: (B, C_i, T) along channels. Entries are
        ``(tensor, mask)`` pairs from ``Conditioner`` or bare tensors (inpaint_mask, inpaint_masked_input).
        """

        def get(key: str, role: str):
            if key not in tensors:
                raise KeyError(f"conditioning input {key!r} is missing (listed in {role})")
            entry = tensors[key]
            return (entry, None) if isinstance(entry, torch.Tensor) else (entry[0], entry[1])

        cross = cross_mask = glob = local = None
        if self.cross_attention_ids:
            seqs, masks = [], []
            for key in self.cross_attention_ids:
                x, mask = get(key, "cross_attention_cond_ids")
                if mask is None:
                    mask = torch.ones(x.shape[:-1], dtype=torch.bool, device=x.device)
                if x.dim() == 2:
                    x, mask = x[:, None], mask[:, None]
                seqs.append(x)
                masks.append(mask.to(torch.bool))
            cross, cross_mask = torch.cat(seqs, dim=1), torch.cat(masks, dim=1)
        if self.global_ids:
            glob = torch.cat([get(key, "global_cond_ids")[0] for key in self.global_ids], dim=-1)
            if glob.dim() == 3:
                glob = glob.squeeze(1)
        if self.local_add_ids:
            local = torch.cat([get(key, "local_add_cond_ids")[0] for key in self.local_add_ids], dim=1)
        return DiTConditioning(cross, cross_mask, glob, local)
