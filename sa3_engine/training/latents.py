"""The pre-encoded latent dataset (one ``.safetensors`` file) and the variable-length batches drawn from it.

File: tensors ``latents`` (C, total frames, float32, clips concatenated), ``starts`` (N + 1, int64, clip i
is frames starts[i]:starts[i+1]) and ``silence`` (C, the latent of digital silence, used as padding); the
metadata entry ``sa3_latents`` is JSON with each clip's captions and duration (seconds) and the
autoencoder's sample rate and downsampling ratio. Captions stay text: the text encoder is frozen and runs
during training, so the file does not grow with its width.

Batches (stage 1, 2, 3, LoRA): items longer than ``max_frames`` are cropped at a random offset; shorter
ones are right-padded with the silence latent, and their valid length is extended by an exponential
amount of that silence (``masks.silence_extension``). The batch is as long as its longest valid item.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sa3_engine.audio import atomic_path
from sa3_engine.training.masks import lengths_mask, silence_extension

METADATA_KEY = "sa3_latents"


@dataclass
class LatentDataset:
    latents: torch.Tensor  # (C, total)
    starts: torch.Tensor  # (N + 1,)
    silence: torch.Tensor  # (C,)
    captions: list[list[str]]
    seconds: list[float]
    sample_rate: int
    downsampling: int

    def __len__(self) -> int:
        return len(self.captions)

    @property
    def channels(self) -> int:
        return int(self.latents.shape[0])

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.downsampling

    def clip(self, i: int) -> torch.Tensor:
        return self.latents[:, int(self.starts[i]) : int(self.starts[i + 1])]

    def save(self, path: str | Path) -> Path:
        meta = {"captions": self.captions, "seconds": self.seconds, "sample_rate": self.sample_rate,
                "downsampling": self.downsampling}
        tensors = {"latents": self.latents.float().contiguous(), "starts": self.starts.to(torch.int64),
                   "silence": self.silence.float().contiguous()}
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> LatentDataset:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"latent dataset not found: {path} (write one with `sa3 train encode`)")
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get(METADATA_KEY)
            if raw is None:
                raise ValueError(f"{path}: not a latent dataset (no {METADATA_KEY!r} metadata)")
            tensors = {key: f.get_tensor(key) for key in ("latents", "starts", "silence")}
        meta = json.loads(raw)
        return cls(tensors["latents"], tensors["starts"], tensors["silence"], meta["captions"], meta["seconds"],
                   int(meta["sample_rate"]), int(meta["downsampling"]))


@dataclass
class LatentBatch:
    x0: torch.Tensor  # (B, C, T) clean latents, silence after each item's real frames
    valid: torch.Tensor  # (B, T) bool: real frames plus the silence extension (attention and loss)
    real: torch.Tensor  # (B,) real (non-silence) frames
    seconds: torch.Tensor  # (B,) float: each clip's whole duration (the duration condition)
    prompts: list[str]

    @property
    def lengths(self) -> torch.Tensor:
        return self.valid.sum(dim=1)


def draw_batch(data: LatentDataset, size: int, max_frames: int, generator: torch.Generator,
               silence_seconds: float = 4.0, items: list[int] | None = None) -> LatentBatch:
    """A batch of ``size`` random clips (or the given ``items``), each with one random caption."""
    if items is None:
        items = torch.randint(len(data), (size,), generator=generator).tolist()
    pieces, prompts = [], []
    for i in items:
        clip = data.clip(i)
        start = int(torch.randint(max(1, clip.shape[1] - max_frames + 1), (1,), generator=generator))
        pieces.append(clip[:, start : start + max_frames])
        captions = data.captions[i]
        prompts.append(captions[int(torch.randint(len(captions), (1,), generator=generator))])
    real = torch.tensor([p.shape[1] for p in pieces], dtype=torch.int64)
    extended = silence_extension(real, max_frames, silence_seconds * data.frame_rate, generator)
    frames = max(1, int(extended.max()))
    x0 = data.silence[None, :, None].expand(len(items), -1, frames).clone()
    for row, piece in enumerate(pieces):
        x0[row, :, : piece.shape[1]] = piece[:, :frames]
    seconds = torch.tensor([data.seconds[i] for i in items], dtype=torch.float32)
    return LatentBatch(x0, lengths_mask(extended, frames), real, seconds, prompts)
