"""Audio at the edges of the engine: validation, sample-rate and channel conversion, splicing, files.

Audio is always a float32 numpy array shaped (channels, samples) with its sample rate beside it.
Nothing here modifies an input array; files are written atomically and never overwrite unless asked.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from pedalboard.io import AudioFile, StreamResampler

from sa3_engine import wav

# WAV sample formats by name (``sa3 --format``, ``write_wav(bit_depth=...)``) -> bits per sample;
# 32 bits is IEEE float, the only format that keeps samples beyond [-1, 1].
BIT_DEPTHS = {name: bits for name, (_, bits) in wav.FORMATS.items()}


def _array(audio, field: str) -> np.ndarray:
    """``audio`` as a (channels, samples) int or float array, shape checked, not copied."""
    if hasattr(audio, "detach"):
        audio = audio.detach().cpu().numpy()
    a = np.asarray(audio)
    if a.dtype.kind not in "if":
        raise ValueError(f"{field}: expected float or integer samples, got dtype {a.dtype}")
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{field}: expected (channels, samples), got shape {a.shape}")
    if a.shape[0] > 8:
        raise ValueError(f"{field}: {a.shape[0]} channels; audio must be (channels, samples), not (samples, channels)")
    if a.shape[1] == 0 or a.shape[0] == 0:
        raise ValueError(f"{field}: audio is empty")
    return a


def as_audio(audio, field: str = "audio") -> np.ndarray:
    """Validate and convert to float32 (channels, samples); ints are scaled to [-1, 1].

    Accepts (samples,) mono and (channels, samples); torch tensors too. Raises ValueError naming
    ``field`` for NaN/inf, empty, or more than 8 channels (likely a (samples, channels) mix-up).
    """
    a = _array(audio, field)
    if a.dtype.kind == "i":
        a = a.astype(np.float32) / float(np.iinfo(a.dtype).max + 1)
    a = a.astype(np.float32, copy=True)
    if not np.isfinite(a).all():
        raise ValueError(f"{field}: audio contains NaN or infinite samples")
    return a


def check_sample_rate(sample_rate, field: str = "sample_rate") -> int:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or not 1000 <= sample_rate <= 768000:
        raise ValueError(f"{field}: sample rate must be an integer between 1000 and 768000 Hz, got {sample_rate!r}")
    return int(sample_rate)


def resample(audio: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Band-limited resampling (pedalboard's windowed sinc), time-aligned, exactly round(N*target/source) long."""
    if source_rate == target_rate:
        return audio.copy()
    resampler = StreamResampler(source_rate, target_rate, audio.shape[0])
    out = np.concatenate([resampler.process(np.ascontiguousarray(audio)), resampler.process(None)], axis=1)
    n = round(audio.shape[1] * target_rate / source_rate)
    if out.shape[1] < n:
        out = np.pad(out, ((0, 0), (0, n - out.shape[1])))
    return np.ascontiguousarray(out[:, :n], dtype=np.float32)


def to_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """Mono is duplicated; extra channels beyond ``channels`` are dropped (as the official code does)."""
    if audio.shape[0] == channels:
        return audio
    if audio.shape[0] == 1:
        return np.repeat(audio, channels, axis=0)
    if audio.shape[0] > channels:
        return audio[:channels].copy()
    raise ValueError(f"cannot make {channels} channels from {audio.shape[0]}")


def length_seconds(audio, sample_rate, field: str = "audio") -> float:
    """The length of input audio, after the shape and rate checks ``prepare`` makes; nothing is copied."""
    return _array(audio, field).shape[1] / check_sample_rate(sample_rate, f"{field} sample rate")


def prepare(audio, sample_rate, target_rate: int, channels: int, field: str = "audio", max_seconds: float | None = None):
    """Validate any input audio and bring it to the model's rate and channel count.

    Audio longer than ``max_seconds`` is refused before anything is copied or resampled.
    """
    sr = check_sample_rate(sample_rate, f"{field} sample rate")
    if max_seconds is not None and (seconds := length_seconds(audio, sr, field)) > max_seconds:
        raise ValueError(f"{field}: {seconds:g} s is longer than the limit of {max_seconds:g} s")
    return to_channels(resample(as_audio(audio, field), sr, target_rate), channels)


def equal_power_fade(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(fade_in, fade_out) gains of length n with fade_in^2 + fade_out^2 = 1."""
    phase = (np.arange(n, dtype=np.float64) + 0.5) / max(n, 1) * (np.pi / 2)
    return np.sin(phase).astype(np.float32), np.cos(phase).astype(np.float32)


def splice(source: np.ndarray, generated: np.ndarray, regions: list[tuple[int, int]], fade: int) -> np.ndarray:
    """Keep ``source`` bit-identical outside ``regions`` (sample ranges), take ``generated`` inside.

    The equal-power crossfades sit inside each region, so not one kept sample changes. Where the
    source is shorter than the output (continuation), the output tail is generated audio.
    """
    out = generated.copy()
    n_src = min(source.shape[1], out.shape[1])
    keep = np.zeros(out.shape[1], dtype=bool)
    keep[:n_src] = True
    for start, end in regions:
        keep[max(0, start) : max(0, end)] = False
    kept = np.flatnonzero(keep)
    out[:, kept] = source[:, kept]
    for start, end in regions:
        start, end = max(0, start), min(end, out.shape[1])
        if start > 0:  # leaving kept source: it fades out while the new audio fades in
            n = min(fade, (end - start) // 2, n_src - start)
            if n > 0:
                fade_in, fade_out = equal_power_fade(n)
                seg = slice(start, start + n)
                out[:, seg] = source[:, seg] * fade_out + generated[:, seg] * fade_in
        if end < n_src:  # back into kept source
            n = min(fade, (end - start) // 2)
            if n > 0:
                fade_in, fade_out = equal_power_fade(n)
                seg = slice(end - n, end)
                out[:, seg] = generated[:, seg] * fade_out + source[:, seg] * fade_in
    return out


def unique_path(
    path: str | os.PathLike, force: bool = False, *, suffix: str | None = None, sidecars: Sequence[str] = ()
) -> Path:
    """``path`` itself if free (or ``force``), else the first free ``stem-1<suffix>``, ``stem-2<suffix>``, ...

    ``suffix`` is the ending kept after the number (default: the last one; pass ``.latents.safetensors``
    for a two-part ending). ``sidecars`` are endings of files written beside the result (``.json``): a
    name is free only if the file and all its sidecars are.
    """
    p = Path(path)
    suffix = p.suffix if suffix is None else suffix
    if not p.name.endswith(suffix):
        raise ValueError(f"{p}: does not end in {suffix}")
    stem = p.name[: len(p.name) - len(suffix)]
    candidate, i = stem, 0
    while not force and any((p.parent / f"{candidate}{ending}").exists() for ending in (suffix, *sidecars)):
        i += 1
        candidate = f"{stem}-{i}"
    return p.with_name(candidate + suffix)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write to: moved onto ``path`` when the block succeeds,
    removed when it fails, so ``path`` is never seen half-written. It keeps ``path``'s extension, which
    some writers use to pick the format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_finite(audio: np.ndarray, what: str) -> np.ndarray:
    """``audio`` if every sample is finite; else a RuntimeError: NaN or inf must never reach a file or a mix."""
    if not np.isfinite(audio).all():
        bad = int(np.size(audio) - np.count_nonzero(np.isfinite(audio)))
        raise RuntimeError(f"{what}: {bad} of {np.size(audio)} samples are NaN or infinite; nothing was written")
    return audio


def write_wav(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, bit_depth: str = "24") -> Path:
    """Write atomically. bit_depth: a name in ``BIT_DEPTHS``; all but float clip to [-1, 1].

    PCM is written sample-exactly (``sa3_engine.wav``): audio read from a 16- or 24-bit file and written
    back at the same depth holds the file's integer samples. Non-finite audio is refused (RuntimeError).
    """
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit_depth must be one of {sorted(BIT_DEPTHS)}, got {bit_depth!r}")
    check_finite(audio, str(path))
    with atomic_path(path) as tmp:
        wav.write_wav_file(tmp, audio, check_sample_rate(sample_rate), bit_depth)
    return Path(path)


def write_json(path: str | os.PathLike, data: dict) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
    return Path(path)


def read_audio(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(audio (channels, samples) float32, sample_rate): WAV sample-exactly (``sa3_engine.wav``; a truncated
    file is a ValueError naming it and both lengths), other formats through pedalboard."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"audio file not found: {path}")
    with open(path, "rb") as f:
        head = f.read(4)
    if head == b"RIFF":
        try:
            return wav.read_wav(path)
        except wav.UnsupportedWav:
            pass  # e.g. a compressed WAV: pedalboard may decode it
    with AudioFile(str(path)) as f:
        return f.read(f.frames).astype(np.float32, copy=False), int(f.samplerate)
