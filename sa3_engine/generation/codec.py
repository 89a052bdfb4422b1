"""The SAME codec as the pipeline uses it: plain or chunked encode/decode, and how many calls a decode takes."""

from __future__ import annotations

from collections.abc import Callable

import torch

from sa3_engine.models.same import chunk_starts

CODEC_CHUNK, CODEC_OVERLAP = 128, 32  # official chunked encode/decode sizes, in latent frames
# Latent frames of right context a chunked decode gives the audio it keeps (half the overlap). Chunked
# decoding trusts that much context at every chunk boundary, so it decodes only that much past an item's
# duration rather than its whole window (a 10 s request has 6 s of padding: 174 frames, two chunks, against
# 124 frames in one call). SAME-S output within the duration is unchanged (tests/test_pipeline.py).
DECODE_CONTEXT = CODEC_OVERLAP // 2


def decode_chunks(frames: int, chunked: bool) -> int:
    """How many decoder calls (progress steps) decoding ``frames`` takes."""
    if not chunked or frames < CODEC_CHUNK:
        return 1
    return len(chunk_starts(frames, CODEC_CHUNK, CODEC_CHUNK - CODEC_OVERLAP))


def codec_encode(autoencoder, audio: torch.Tensor, chunked: bool) -> torch.Tensor:
    """(B, channels, N) audio -> (B, C, T) latents, chunked as the official pretransform does when asked."""
    if chunked:
        return autoencoder.encode_chunked(audio, CODEC_CHUNK, CODEC_OVERLAP)
    return autoencoder.encode(audio)


def codec_decode(
    autoencoder, latents: torch.Tensor, chunked: bool, progress: Callable[[int, int], None] | None = None
) -> torch.Tensor:
    """(B, C, T) latents -> (B, channels, T * ratio) audio; chunked decoding holds one chunk at a time."""
    if chunked and latents.shape[-1] >= CODEC_CHUNK:
        return autoencoder.decode_chunked(latents, CODEC_CHUNK, CODEC_OVERLAP, progress=progress)
    audio = autoencoder.decode(latents)
    if progress is not None:
        progress(1, 1)
    return audio

