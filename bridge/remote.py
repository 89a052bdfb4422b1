"""What a client does on its own side when the engine is on another machine (no shared disk).

The engine refuses ``audio.path`` and ``output_dir`` from remote peers, so ``EngineClient`` reads source
files here and sends them as buffers, and writes results into ``output_dir`` here, named as the engine
would (``<request_id>-<index>.wav``, ``-1``, ``-2``, ... appended if taken; 32-bit float WAV), each file
complete before its name appears.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np

from bridge.results import Generation


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(audio (channels, frames) float32, sample_rate) of a file this machine can read."""
    from pedalboard.io import AudioFile  # the engine reads the same formats

    with AudioFile(str(path)) as f:
        return np.asarray(f.read(f.frames), dtype=np.float32), int(round(f.samplerate))


def write_results(results: list[Generation], folder: str | os.PathLike, request_id: str) -> list[Generation]:
    """Each result written to ``folder`` (created if missing); the results with their ``path`` set."""
    from pedalboard.io import AudioFile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for index, result in enumerate(results):
        fd, tmp = tempfile.mkstemp(prefix=f".{request_id}-{index}.", suffix=".wav", dir=folder)
        os.close(fd)
        try:
            with AudioFile(tmp, "w", result.sample_rate, result.audio.shape[0], bit_depth=32) as f:
                f.write(np.ascontiguousarray(result.audio, dtype=np.float32))
            path = _link_free_name(Path(tmp), folder, f"{request_id}-{index}")
        finally:
            Path(tmp).unlink(missing_ok=True)
        written.append(dataclasses.replace(result, path=str(path)))
    return written


def _link_free_name(tmp: Path, folder: Path, stem: str) -> Path:
    """Give ``tmp`` the first free name ``stem.wav``, ``stem-1.wav``, ...; a hard link never replaces a file."""
    for n in range(10_000):
        path = folder / (f"{stem}.wav" if n == 0 else f"{stem}-{n}.wav")
        try:
            os.link(tmp, path)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free name for {stem}.wav")
