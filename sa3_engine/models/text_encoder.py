"""The T5Gemma text encoder: prompts -> (last hidden state, attention mask), loaded from a local folder.

Loading and tokenisation follow the official prompt conditioner (AutoTokenizer, AutoConfig with
``is_encoder_decoder = False``, T5GemmaEncoderModel; right-padded to ``max_length`` with truncation),
but never reach the network. The encoder is kept outside every nn.Module of the model, so its weights
never enter our state dict, and it is frozen. Attention is eager on purpose: T5Gemma soft-caps its
attention logits, which only the eager path computes, so results do not depend on what is installed.

Producers re-run one prompt with many seeds, so encodings of recent prompts are kept (a small LRU).
A prompt longer than ``max_length`` tokens is cut, as officially, with a warning naming what was cut.
"""

from __future__ import annotations

import os
import warnings
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer, T5GemmaEncoderModel
from transformers.utils import logging as hf_logging

from sa3_engine.models.config import TEXT_ENCODER_FILES

DEFAULT_CACHE_SIZE = 32


@contextmanager
def _quiet_offline_load() -> Iterator[None]:
    """HF_HUB_OFFLINE=1 (a local folder must never turn into a download) and no progress bar, for one load."""
    previous = os.environ.get("HF_HUB_OFFLINE")
    bar = hf_logging.is_progress_bar_enabled()
    os.environ["HF_HUB_OFFLINE"] = "1"
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous
        if bar:
            hf_logging.enable_progress_bar()


class TextEncoder:
    """A frozen T5Gemma encoder and its tokenizer, on one device.

    ``dtype`` is the encoder's compute dtype (float32 on CPU; the caller may choose half on CUDA);
    ``encode`` always returns float32.
    """

    def __init__(
        self,
        folder: str | os.PathLike,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ):
        folder = Path(folder)
        missing = [name for name in TEXT_ENCODER_FILES if not (folder / name).is_file()]
        if missing:
            raise FileNotFoundError(f"text encoder folder {folder} lacks {', '.join(missing)}")
        with _quiet_offline_load():
            self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            config.is_encoder_decoder = False  # the file may describe the full encoder-decoder model
            model = T5GemmaEncoderModel.from_pretrained(
                folder, config=config, local_files_only=True, dtype=dtype, attn_implementation="eager"
            )
        self.model = model.to(device).eval().requires_grad_(False)
        self.folder, self.device, self.cache_size = folder, torch.device(device), cache_size
        self._cache: OrderedDict[tuple[str, int], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.encoder.hidden_size)

    def encode(self, prompts: Sequence[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, max_length, hidden) float32 last hidden state and (B, max_length) bool mask, on ``device``.

        Each prompt is truncated or right-padded to ``max_length`` tokens; masked positions still hold
        numbers (the prompt conditioner replaces them). An empty prompt gives an all-False mask row.
        """
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise TypeError("prompts: expected a list of strings")
        if not prompts:
            raise ValueError("prompts: expected at least one prompt")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length: expected a positive integer, got {max_length!r}")
        new = [p for p in dict.fromkeys(prompts) if (p, max_length) not in self._cache]
        if new:
            hidden, mask = self._run(new, max_length)
            for i, prompt in enumerate(new):
                self._cache[(prompt, max_length)] = (hidden[i].clone(), mask[i].clone())
        for prompt in prompts:
            self._cache.move_to_end((prompt, max_length))
        hidden = torch.stack([self._cache[(p, max_length)][0] for p in prompts])
        mask = torch.stack([self._cache[(p, max_length)][1] for p in prompts])
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return hidden, mask

    def _run(self, prompts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        self._warn_if_truncated(prompts, max_length)
        tokens = self.tokenizer(
            prompts, truncation=True, max_length=max_length, padding="max_length", return_tensors="pt"
        )
        ids = tokens["input_ids"].to(self.device)
        mask = tokens["attention_mask"].to(self.device, torch.bool)
        with torch.no_grad():
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        return hidden.float(), mask

    def _warn_if_truncated(self, prompts: list[str], max_length: int) -> None:
        """Warn for each prompt longer than ``max_length`` tokens: the encoder never sees its end, so tags
        written last would silently do nothing."""
        kept = max_length - self.tokenizer.num_special_tokens_to_add()  # truncation keeps the special tokens
        for ids in self.tokenizer(prompts, add_special_tokens=False)["input_ids"]:
            if len(ids) > kept:
                cut = self.tokenizer.decode(ids[kept:]).strip()
                cut = cut if len(cut) <= 80 else cut[:77] + "..."
                warnings.warn(f"prompt: longer than the text encoder's {max_length} tokens; ignored: {cut!r}",
                              stacklevel=4)
