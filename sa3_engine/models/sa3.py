"""``SA3Model``: the DiT, the conditioner heads and the SAME autoencoder, built from one full config.

The module tree mirrors the official ``ConditionedDiffusionModelWrapper`` so a released
``model.safetensors`` loads without renaming: ``model.model.*`` (DiT), ``conditioner.conditioners.*``,
``pretransform.model.*`` (SAME). The text encoder is attached separately and stays outside the tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn

from sa3_engine.models.checkpoint import CheckpointError, load_weights
from sa3_engine.models.conditioners import Conditioner, ConditioningLayout, DiTConditioning
from sa3_engine.models.config import (
    CONFIG_FILENAME,
    autoencoder_config,
    conditioning_config,
    diffusion_block,
    dit_config,
    field,
    is_autoencoder_config,
    load_config,
    sample_rate,
)
from sa3_engine.models.dit import DiffusionTransformer
from sa3_engine.models.layers import ROTARY_BUFFER, rotary_dtype

WEIGHTS_FILENAME = "model.safetensors"
AUTOENCODER_PREFIX = "pretransform.model."


class DiTWrapper(nn.Module):
    """Holds the DiT at ``.model`` (official ``DiTWrapper``), so its keys read ``model.model.*``."""

    def __init__(self, dit: DiffusionTransformer):
        super().__init__()
        self.model = dit

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs)


class Pretransform(nn.Module):
    """Holds the SAME autoencoder at ``.model`` plus the official ``chunked`` flag.

    The official ``iterate_batch`` flag (run the autoencoder item by item) is not kept: the pipeline
    always encodes and decodes one item at a time, whatever the flag says.
    """

    def __init__(self, autoencoder: nn.Module, chunked: bool = False):
        super().__init__()
        self.model = autoencoder
        self.chunked = chunked


def _build_autoencoder(config: dict) -> nn.Module:
    from sa3_engine.models.same import (
        SAMEAutoencoder,  # imported here: the autoencoder is its own module and heavy to build
    )

    return SAMEAutoencoder.from_config(autoencoder_config(config), sample_rate=sample_rate(config))


class SA3Model(nn.Module):
    """DiT + conditioner heads + SAME for one full SA3 config (``model_type`` ``diffusion_cond*``)."""

    def __init__(self, config: dict, dit: DiffusionTransformer, conditioner: Conditioner, pretransform: Pretransform):
        super().__init__()
        self.model = DiTWrapper(dit)
        self.conditioner = conditioner
        self.pretransform = pretransform
        self.config = config
        diffusion = diffusion_block(config)
        self.layout = ConditioningLayout.from_config(diffusion)
        self.diffusion_objective: str = diffusion.get("diffusion_objective", "v")
        self.sample_rate = sample_rate(config)
        self.io_channels = int(field(config["model"], "io_channels", "model"))

    @classmethod
    def from_config(cls, config: dict, device: torch.device | str | None = None) -> SA3Model:
        """Build with random weights; ``device="meta"`` allocates nothing (then load a checkpoint)."""
        with torch.device(device) if device is not None else nullcontext():
            pretransform_block = field(config["model"], "pretransform", "model")
            return cls(
                config,
                DiffusionTransformer.from_config(dit_config(config)),
                Conditioner.from_config(conditioning_config(config)),
                Pretransform(_build_autoencoder(config), chunked=bool(pretransform_block.get("chunked", False))),
            )

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        config: dict | str | Path | None = None,
        dtype: torch.dtype = torch.float32,
        autoencoder_dtype: torch.dtype | None = None,
        device: torch.device | str = "cpu",
    ) -> SA3Model:
        """Load a released model: a folder with ``model_config.json`` + ``model.safetensors``, or the
        ``.safetensors`` file itself (config next to it unless given). Strict: every tensor must fit.

        ``dtype`` is the DiT's and the conditioner heads'; ``autoencoder_dtype`` the SAME's (None: ``dtype``,
        as the official ``model_half`` casts everything). Each part's tensors are cast once, from the file."""
        weights, config = _locate(path, config)
        if is_autoencoder_config(config):
            raise CheckpointError(f"{weights}: this is a standalone autoencoder; load it with load_autoencoder")
        model = cls.from_config(config, device="meta")
        autoencoder_dtype = dtype if autoencoder_dtype is None else autoencoder_dtype

        def part_dtype(key: str) -> torch.dtype:
            return autoencoder_dtype if key.startswith(AUTOENCODER_PREFIX) else dtype

        load_weights(model, weights, dtype=_with_rotary_tables(part_dtype), device=device)
        return model.eval().requires_grad_(False)

    def cast(self, dtype: torch.dtype, autoencoder_dtype: torch.dtype | None = None) -> SA3Model:
        """Cast in place as ``from_pretrained`` loads: the DiT and heads to ``dtype``, SAME to
        ``autoencoder_dtype`` (None: ``dtype``), rotary tables as ``layers.rotary_dtype`` says."""
        autoencoder_dtype = dtype if autoencoder_dtype is None else autoencoder_dtype
        part_dtype = _with_rotary_tables(lambda key: autoencoder_dtype if key.startswith(AUTOENCODER_PREFIX) else dtype)
        for name, tensor in [*self.named_parameters(), *self.named_buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.to(part_dtype(name))
        return self

    def compile_blocks(self, *, dit: bool = True) -> None:
        """What ``--compile`` compiles: the DiT's blocks (``dit`` False: the DiT runs elsewhere, CoreML)
        and the SAME decoder's layers where that pays (``SAMEAutoencoder.compile_decoder``)."""
        if dit:
            self.dit.compile_blocks()
        self.autoencoder.compile_decoder()

    @property
    def dit(self) -> DiffusionTransformer:
        return self.model.model

    @property
    def autoencoder(self) -> nn.Module:
        return self.pretransform.model

    def conditioning(self, inputs: Mapping[str, Any]) -> DiTConditioning:
        """Conditioner heads on the inputs they own, the rest passed through, assembled for the DiT.

        inputs: ``{"prompt": (t5_last_hidden_state, attention_mask), "seconds_total": [s, ...],
        "inpaint_mask": (B, 1, T), "inpaint_masked_input": (B, C, T)}`` (ids as in the config).
        """
        own = {k: v for k, v in inputs.items() if k in self.conditioner.conditioners}
        passed = {k: v for k, v in inputs.items() if k not in own}
        return self.layout.assemble({**passed, **self.conditioner(own)})


def load_autoencoder(
    path: str | Path,
    *,
    config: dict | str | Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """The SAME autoencoder of a standalone SAME folder/file (bare keys) or of a full SA3 checkpoint."""
    weights, config = _locate(path, config)
    prefix = "" if is_autoencoder_config(config) else AUTOENCODER_PREFIX
    with torch.device("meta"):
        autoencoder = _build_autoencoder(config)
    load_weights(autoencoder, weights, prefix=prefix, dtype=_with_rotary_tables(lambda key: dtype), device=device)
    return autoencoder.eval().requires_grad_(False)


def _with_rotary_tables(part_dtype: Callable[[str], torch.dtype]) -> Callable[[str], torch.dtype]:
    """``part_dtype``, except that rotary ``inv_freq`` tables follow ``layers.rotary_dtype``."""

    def dtype(key: str) -> torch.dtype:
        chosen = part_dtype(key)
        return rotary_dtype(chosen) if key.rsplit(".", 1)[-1] == ROTARY_BUFFER else chosen

    return dtype


def _locate(path: str | Path, config: dict | str | Path | None) -> tuple[Path, dict]:
    path = Path(path)
    weights = path / WEIGHTS_FILENAME if path.is_dir() else path
    if config is None:
        config = weights.parent / CONFIG_FILENAME
    if not isinstance(config, dict):
        config = load_config(config)
    if not weights.is_file():
        raise CheckpointError(f"no weights file at {weights}")
    return weights, config

