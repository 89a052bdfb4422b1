"""WAV files read and written sample-exactly, with numpy and the RIFF layout (no codec library).

Integer PCM is scaled by a power of two both ways (a 24-bit sample k reads as k / 2**23 and writes back
as round(x * 2**23)), so a file's integer samples survive a read and a write unchanged; 32-bit float is
copied as it is. A file whose header promises more audio than it holds is refused, never zero-padded.
Formats this module does not know (compressed WAV, RF64) raise ``UnsupportedWav``.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np

PCM, IEEE_FLOAT, EXTENSIBLE = 1, 3, 0xFFFE
# the first two bytes of a WAVE_FORMAT_EXTENSIBLE sub-format GUID are the plain format tag
_GUID_TAIL = b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
# sample format name -> (format tag, bits per sample)
FORMATS = {"16": (PCM, 16), "24": (PCM, 24), "float": (IEEE_FLOAT, 32)}


class UnsupportedWav(ValueError):
    """A WAV file in a format this module does not decode (another reader may)."""


def _chunks(data: memoryview):
    """(id, offset, declared size) of each chunk after the RIFF/WAVE header."""
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = bytes(data[pos : pos + 4]), struct.unpack_from("<I", data, pos + 4)[0]
        yield chunk_id, pos + 8, size
        pos += 8 + size + (size & 1)


def read_wav(path: str | os.PathLike) -> tuple[np.ndarray, int]:
    """(float32 (channels, samples), sample_rate). Raises ValueError naming the file for a truncated or
    malformed file, ``UnsupportedWav`` for a format other than 8/16/24/32-bit PCM or 32/64-bit float."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    if len(data) < 12 or bytes(data[:4]) != b"RIFF" or bytes(data[8:12]) != b"WAVE":
        kind = bytes(data[:4]) if len(data) >= 4 else b""
        if kind == b"RF64":
            raise UnsupportedWav(f"{path}: RF64 WAV is not supported")
        raise ValueError(f"{path}: not a RIFF/WAVE file")
    fmt = None
    for chunk_id, offset, size in _chunks(data):
        if chunk_id == b"fmt ":
            if size < 16 or offset + 16 > len(data):
                raise ValueError(f"{path}: the fmt chunk is cut short")
            fmt = struct.unpack_from("<HHIIHH", data, offset)
            if fmt[0] == EXTENSIBLE and size >= 40:
                sub = bytes(data[offset + 24 : offset + 40])
                if sub[2:] == _GUID_TAIL:
                    fmt = (struct.unpack_from("<H", sub)[0], *fmt[1:])
        elif chunk_id == b"data":
            if fmt is None:
                raise ValueError(f"{path}: the data chunk comes before the fmt chunk")
            return _samples(path, fmt, data, offset, size)
    raise ValueError(f"{path}: no {'fmt' if fmt is None else 'data'} chunk")


def _samples(path: Path, fmt: tuple, data: memoryview, offset: int, size: int) -> tuple[np.ndarray, int]:
    tag, channels, rate, _, block, bits = fmt
    dtypes = {(PCM, 8): "u1", (PCM, 16): "<i2", (PCM, 24): None, (PCM, 32): "<i4",
              (IEEE_FLOAT, 32): "<f4", (IEEE_FLOAT, 64): "<f8"}
    if (tag, bits) not in dtypes or channels < 1 or block != channels * bits // 8:
        raise UnsupportedWav(f"{path}: WAV format {tag:#x} with {bits}-bit samples is not supported")
    frames, held = size // block, (len(data) - offset) // block
    if held < frames:
        raise ValueError(f"{path}: truncated: its header says {frames} frames ({frames / rate:g} s) "
                         f"but the file holds {held} ({held / rate:g} s)")
    raw = np.frombuffer(data, np.uint8, frames * block, offset)
    if bits == 24:  # three little-endian bytes, sign-extended through the top byte of an int32
        b = raw.reshape(-1, 3).astype(np.int32)
        ints = (b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)) << 8 >> 8
        audio = ints.astype(np.float32) / np.float32(2**23)
    else:
        values = raw.view(dtypes[tag, bits])
        if tag == IEEE_FLOAT:
            audio = values.astype(np.float32)
        elif bits == 8:
            audio = (values.astype(np.float32) - 128) / np.float32(128)
        else:
            audio = (values.astype(np.float64) / 2.0 ** (bits - 1)).astype(np.float32)
    return np.ascontiguousarray(audio.reshape(frames, channels).T), int(rate)


def encode(audio: np.ndarray, sample_format: str) -> bytes:
    """Interleaved little-endian sample bytes of float (channels, samples) audio; PCM clips to full scale."""
    tag, bits = FORMATS[sample_format]
    frames = np.ascontiguousarray(np.asarray(audio, dtype=np.float32).T)
    if tag == IEEE_FLOAT:
        return np.ascontiguousarray(frames, dtype="<f4").tobytes()
    scale = 2.0 ** (bits - 1)
    ints = np.clip(np.rint(frames.astype(np.float64) * scale), -scale, scale - 1).astype(np.int32)
    if bits == 16:
        return ints.astype("<i2").tobytes()
    return ints.astype("<i4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def write_wav_file(path: str | os.PathLike, audio: np.ndarray, sample_rate: int, sample_format: str) -> None:
    """Write a canonical WAV (a plain fmt chunk, then data) to ``path`` (not atomically: see audio.write_wav)."""
    tag, bits = FORMATS[sample_format]
    channels = audio.shape[0]
    payload = encode(audio, sample_format)
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, sample_rate, sample_rate * block, block, bits)
    pad = b"\x00" * (len(payload) & 1)
    header = b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(payload) + len(pad)) + b"WAVE"
    header += b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(payload))
    with open(path, "wb") as f:
        f.write(header + payload + pad)
