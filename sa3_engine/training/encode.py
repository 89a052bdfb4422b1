"""``sa3 train encode``: a folder of audio + captions -> a latent dataset file, with a trained autoencoder.

Each clip is encoded whole (in the official chunks when it is long); its duration is the file's length in
seconds. The silence latent (the padding of variable-length batches) is the mean latent of digital silence.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from sa3_engine.training.clips import ClipFile, list_clips, load_audio
from sa3_engine.training.latents import LatentDataset

SILENCE_FRAMES = 8
CHUNK_FRAMES = 128


@torch.no_grad()
def encode_clip(autoencoder, audio: torch.Tensor) -> torch.Tensor:
    """(C, n) audio -> (latent_dim, floor(n / ratio)) latents; at least one frame (short clips are padded)."""
    ratio = autoencoder.downsampling_ratio
    frames = max(1, audio.shape[-1] // ratio)
    x = torch.nn.functional.pad(audio, (0, max(0, frames * ratio - audio.shape[-1])))[None, :, : frames * ratio]
    if frames >= CHUNK_FRAMES:
        return autoencoder.encode_chunked(x)[0]
    return autoencoder.encode(x)[0, :, :frames]


@torch.no_grad()
def silence_latent(autoencoder) -> torch.Tensor:
    silence = torch.zeros(1, autoencoder.io_channels, SILENCE_FRAMES * autoencoder.downsampling_ratio)
    return autoencoder.encode(silence)[0].mean(dim=-1)


def encode_clips(autoencoder, clips: list[ClipFile],
                 progress: Callable[[int, int], None] | None = None) -> LatentDataset:
    rate, channels = autoencoder.sample_rate, autoencoder.io_channels
    pieces, captions, seconds = [], [], []
    for i, clip in enumerate(clips):
        audio = torch.from_numpy(load_audio(clip.path, rate, channels))
        pieces.append(encode_clip(autoencoder, audio))
        captions.append(list(clip.captions))
        seconds.append(round(audio.shape[-1] / rate, 6))
        if progress is not None:
            progress(i + 1, len(clips))
    starts = torch.tensor([0] + [p.shape[-1] for p in pieces]).cumsum(0)
    return LatentDataset(torch.cat(pieces, dim=-1), starts, silence_latent(autoencoder), captions, seconds,
                         rate, autoencoder.downsampling_ratio)


def encode_folder(autoencoder, folder: str | Path, out: str | Path,
                  progress: Callable[[int, int], None] | None = None) -> Path:
    return encode_clips(autoencoder, list_clips(folder), progress).save(out)
