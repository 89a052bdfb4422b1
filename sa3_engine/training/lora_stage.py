"""LoRA fine-tuning: low-rank adapters on a frozen model, trained with the stage-1 flow loss, written in
the official adapter format (``models.lora`` loads and stacks it).

Adapters go on every ``nn.Linear`` / ``nn.Conv1d`` of the DiT wrapper and of the conditioner heads whose
name passes ``include`` / ``exclude`` (substring filters with bracket ranges, as officially):
W' = W + (alpha / rank) B A, A (rank, fan_in) Kaiming-uniform, B (fan_out, rank) zero, so training starts
at the base model. The file: ``<layer>.parametrizations.weight.0.lora_A|lora_B`` in float16, layer names
relative to the DiT wrapper (``model.transformer...``) or the conditioner (``conditioners...``), and the
metadata ``lora_config`` = {rank, alpha, adapter_type "lora", dropout 0, include, exclude}.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
import torch.nn.utils.parametrize as parametrize
from safetensors.torch import save_file
from torch import nn

from sa3_engine.audio import atomic_path
from sa3_engine.models.lora import ADAPTED_TYPES, matches_any
from sa3_engine.models.sa3 import SA3Model
from sa3_engine.training.conditioning import Prompts, text_encoder_for
from sa3_engine.training.flow_stage import FlowSettings, check_latents, flow_stage
from sa3_engine.training.folders import text_encoder_folder, trainable_model
from sa3_engine.training.latents import LatentDataset
from sa3_engine.training.runner import LossStage

ADAPTER_KEY = ".parametrizations.weight.0."
# The official LoRA script's optimiser (AdamW, lr 1e-4, weight decay 0.01, betas 0.9/0.95); a small batch.
LORA_SETTINGS = FlowSettings(learning_rate=1e-4, batch_size=4)


class TrainableLora(nn.Module):
    """The parametrization W -> W + scale B A with trainable A and B."""

    def __init__(self, weight: torch.Tensor, rank: int, alpha: float):
        super().__init__()
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        self.lora_A = nn.Parameter(torch.empty(rank, fan_in))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(fan_out, rank))
        self.scale = alpha / rank

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.scale * (self.lora_B @ self.lora_A)).view(weight.shape).to(weight.dtype)


def attach_adapters(model: SA3Model, rank: int, alpha: float, include=None, exclude=None) -> nn.ModuleList:
    """Freeze ``model`` and put a fresh adapter on each selected layer; returns the adapters in name order."""
    model.requires_grad_(False)
    adapters = nn.ModuleList()
    for root in (model.model, model.conditioner):
        for name, module in sorted(root.named_modules()):
            if not isinstance(module, ADAPTED_TYPES) or matches_any(name, exclude):
                continue
            if include is not None and not matches_any(name, include):
                continue
            adapter = TrainableLora(module.weight, rank, alpha)
            parametrize.register_parametrization(module, "weight", adapter)
            adapters.append(adapter)
    if not adapters:
        raise ValueError(f"no Linear/Conv1d layer matches include {include} and exclude {exclude}")
    return adapters


def adapter_tensors(model: SA3Model) -> dict[str, torch.Tensor]:
    """The adapters' tensors under their official keys, float16."""
    out = {}
    for root in (model.model, model.conditioner):
        for key, value in root.state_dict().items():
            if ADAPTER_KEY in key and key.rsplit(".", 1)[-1] in ("lora_A", "lora_B"):
                out[key] = value.detach().to(torch.float16).contiguous()
    return out


def write_lora_file(model: SA3Model, path: Path, rank: int, alpha: float, include=None, exclude=None) -> Path:
    config = {"rank": rank, "alpha": alpha, "adapter_type": "lora", "dropout": 0.0,
              "include": include, "exclude": exclude}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(adapter_tensors(model), str(tmp), metadata={"lora_config": json.dumps(config)})
    return path


def lora_stage(model_folder: Path, data: LatentDataset, settings: FlowSettings, rank: int = 16,
               alpha: float | None = None, include=None, exclude=None) -> LossStage:
    """Adapters on the model in ``model_folder`` (base or post-trained), trained with the flow loss."""
    alpha = float(rank if alpha is None else alpha)
    model = trainable_model(model_folder)
    check_latents(model, data)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        adapters = attach_adapters(model, rank, alpha, include, exclude)
    prompts = Prompts(model, text_encoder_for(model, text_encoder_folder(model_folder)))

    def export(path: Path) -> Path:
        path = path if path.suffix == ".safetensors" else path.with_suffix(".safetensors")
        return write_lora_file(model, path, rank, alpha, include, exclude)

    return flow_stage(model, adapters, data, prompts, settings, export)
