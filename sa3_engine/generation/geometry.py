"""Window geometry: samples <-> latent frames, window sizes, padding and inpainting masks, as the official
``StableAudioModel.generate`` computes them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sa3_engine.models.config import ConfigError, autoencoder_config
from sa3_engine.models.config import field as config_field

DURATION_PADDING_SECONDS = 6.0  # official duration_padding_sec: generated past the duration, then cut
OFFICIAL_SAMPLE_SIZE = 5292032  # official generate()'s default length cap (120 s), whatever the model
DEFAULT_ENCODER_CHUNK = 32  # official fallback when the encoder config has no chunk_size (SAME-L)


@dataclass(frozen=True)
class Geometry:
    """Window sizes from a model: samples per latent frame, length alignment, maximum, duration padding."""

    sample_rate: int
    ratio: int  # audio samples per latent frame
    align: int  # window lengths are multiples of this many samples (whole encoder chunks)
    max_samples: int  # the longest window
    padding_seconds: float = DURATION_PADDING_SECONDS

    @classmethod
    def of(cls, model) -> Geometry:
        """From the config, as the official ``_adapt_sample_size`` reads it.

        The cap is the config's ``sample_size``, floored to whole chunks. The official ``generate()``
        caps at its own ``sample_size`` argument instead, ``OFFICIAL_SAMPLE_SIZE`` (120 s) for every model
        unless the caller passes one, so long requests on a model with a larger config stop at 120 s.
        """
        ratio = int(model.autoencoder.downsampling_ratio)
        encoder = config_field(
            config_field(autoencoder_config(model.config), "encoder", "model.pretransform.config"),
            "config", "model.pretransform.config.encoder",
        )
        chunk = encoder.get("chunk_size") or DEFAULT_ENCODER_CHUNK
        stride = config_field(encoder, "strides", "model.pretransform.config.encoder.config")[0]
        align = ratio * max(1, chunk // stride)
        max_samples = int(config_field(model.config, "sample_size", "config")) // align * align
        if max_samples <= 0:
            raise ConfigError(f"config field sample_size is shorter than one chunk ({align} samples)")
        return cls(model.sample_rate, ratio, align, max_samples)

    @property
    def max_seconds(self) -> float:
        return self.max_samples / self.sample_rate

    def to_samples(self, seconds: float) -> int:
        """The official seconds -> sample index conversion (truncation)."""
        return int(seconds * self.sample_rate)

    def window_samples(self, seconds: Sequence[float]) -> int:
        """Audio samples of the window for items of these durations: (longest + padding) rounded up to whole
        chunks, capped."""
        n = int((max(seconds) + self.padding_seconds) * self.sample_rate)
        return min(-(-n // self.align) * self.align, self.max_samples)

    def frames(self, samples: int) -> int:
        return samples // self.ratio

    def own_frames(self, seconds: Sequence[float]) -> list[int]:
        """Each item's window length in frames, as if it were generated alone."""
        return [self.frames(self.window_samples([s])) for s in seconds]

    def decoded_frames(self, seconds: Sequence[float], context: int | None) -> list[int]:
        """Frames each item decodes: its whole window (``context`` None, as officially), or only the frames
        holding its duration plus ``context`` more (the audio past its duration is cut anyway), rounded up to
        whole chunks like a window, so the decoder's chunks fall where they fall in the whole window."""
        own = self.own_frames(seconds)
        if context is None:
            return own
        chunk = self.align // self.ratio
        return [min(o, -(-(e + context) // chunk) * chunk)
                for o, e in zip(own, self.effective_frames(seconds), strict=True)]

    def effective_frames(self, seconds: Sequence[float]) -> list[int]:
        """Frames holding each item's duration: the length the schedule is built for."""
        return [math.ceil(self.to_samples(s) / self.ratio) for s in seconds]

    def valid_frames(self, seconds: Sequence[float], frames: int) -> list[int]:
        """Frames attended to per item: the duration plus the padding's whole frames, at most ``frames``."""
        headroom = int(self.padding_seconds * self.sample_rate / self.ratio)
        return [min(frames, n + headroom) for n in self.effective_frames(seconds)]

    def padding_mask(self, seconds: Sequence[float], frames: int) -> torch.Tensor:
        """(B, T) bool, True = a valid frame."""
        valid = torch.tensor(self.valid_frames(seconds, frames))
        return torch.arange(frames)[None, :] < valid[:, None]

    def inpaint_mask(
        self, regions: Sequence[tuple[int, int]], seconds: Sequence[float], samples: int, frames: int
    ) -> torch.Tensor:
        """(B, 1, T) float mask, 1 = keep the source, 0 = regenerate.

        The official code builds the mask at the sample rate and downsamples it by nearest neighbour, so
        frame j takes the value at sample :func:`nearest_indices` [j]; this reads those samples directly
        (the same result without a sample-rate mask, ~67 MB per item at 380 s). A frame is regenerated iff
        its sample lies in a region or after the item's duration (per item; the official code uses the
        longest duration for the whole batch, which only differs for batches of mixed durations).
        """
        at = nearest_indices(samples, frames)
        mask = torch.ones(len(seconds), frames)
        for start, end in regions:
            mask[:, (at >= start) & (at < end)] = 0
        for i, s in enumerate(seconds):
            mask[i, at >= self.to_samples(s)] = 0
        return mask[:, None, :]


def nearest_indices(size: int, frames: int) -> torch.Tensor:
    """(frames,) int64: the input index each output takes when ``F.interpolate(mode="nearest")`` resizes
    ``size`` values to ``frames``: min(floor(j * scale), size - 1), scale = size / frames, both in float32
    as in torch's kernel (so j * ratio exactly when size = frames * ratio)."""
    scale = float(np.float32(size) / np.float32(frames))
    at = torch.floor(torch.arange(frames, dtype=torch.float32) * scale).long()
    return at.clamp(max=size - 1)


def regions_to_samples(starts, ends, sample_rate: int) -> list[tuple[int, int]]:
    """Regions given as seconds (two scalars or two equal-length lists) -> official sample ranges."""
    starts = list(starts) if isinstance(starts, (list, tuple)) else [starts]
    ends = list(ends) if isinstance(ends, (list, tuple)) else [ends]
    return [(int(float(s) * sample_rate), int(float(e) * sample_rate)) for s, e in zip(starts, ends, strict=True)]

