"""A training folder of audio clips with captions, as ``sa3 train data`` writes it (or any user folder).

Each clip is an audio file (``.wav``/``.flac``/...) with captions beside it: ``NAME.json`` holding
``"captions"`` (a list, one drawn per use) and/or ``"prompt"``, or ``NAME.txt`` (one caption per line).
A clip without captions gets the empty prompt. Audio is read when used (clips can be long), resampled to
the model rate and made stereo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from sa3_engine import audio as audio_io

AUDIO_SUFFIXES = (".wav", ".flac", ".aif", ".aiff", ".mp3", ".ogg")


@dataclass(frozen=True)
class ClipFile:
    path: Path
    captions: tuple[str, ...]


def _captions(path: Path) -> tuple[str, ...]:
    sidecar, text = path.with_suffix(".json"), path.with_suffix(".txt")
    if sidecar.is_file():
        meta = json.loads(sidecar.read_text())
        found = [c for c in meta.get("captions", []) if isinstance(c, str)]
        if isinstance(meta.get("prompt"), str) and meta["prompt"] not in found:
            found.insert(0, meta["prompt"])
        if found:
            return tuple(found)
    if text.is_file():
        lines = tuple(line.strip() for line in text.read_text().splitlines() if line.strip())
        if lines:
            return lines
    return ("",)


def list_clips(folder: str | Path) -> list[ClipFile]:
    """Every audio file directly in ``folder`` (sorted by name) with its captions."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"training data folder not found: {folder}")
    clips = [ClipFile(p, _captions(p)) for p in sorted(folder.iterdir()) if p.suffix.lower() in AUDIO_SUFFIXES]
    if not clips:
        raise ValueError(f"{folder}: no audio files ({', '.join(AUDIO_SUFFIXES)})")
    return clips


def split_holdout(clips: list[ClipFile], holdout: int) -> tuple[list[ClipFile], list[ClipFile]]:
    """(training, held-out): the last ``holdout`` clips are held out (at most half the folder)."""
    holdout = max(0, min(holdout, len(clips) // 2))
    return (clips[: len(clips) - holdout], clips[len(clips) - holdout :]) if holdout else (clips, [])


def load_audio(path: Path, sample_rate: int, channels: int) -> np.ndarray:
    """(channels, n) float32 at ``sample_rate``."""
    audio, rate = audio_io.read_audio(path)
    return audio_io.prepare(audio, rate, sample_rate, channels, field=str(path))


def random_crops(clips: list[ClipFile], count: int, samples: int, sample_rate: int, channels: int,
                 generator: torch.Generator) -> torch.Tensor:
    """(count, channels, samples): crops of random clips at random offsets, zero-padded when shorter."""
    out = torch.zeros(count, channels, samples)
    for row in range(count):
        clip = clips[int(torch.randint(len(clips), (1,), generator=generator))]
        audio = load_audio(clip.path, sample_rate, channels)
        start = int(torch.randint(max(1, audio.shape[1] - samples + 1), (1,), generator=generator))
        piece = torch.from_numpy(np.ascontiguousarray(audio[:, start : start + samples]))
        out[row, :, : piece.shape[1]] = piece
    return out
