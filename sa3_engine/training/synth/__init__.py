"""Procedural, seeded audio + captions for training the default model (see ``dataset``)."""

from .core import SAMPLE_RATE, Clip
from .dataset import CATEGORIES, clip_at, generate_clip, iterate_clips, write_dataset

__all__ = ["SAMPLE_RATE", "CATEGORIES", "Clip", "clip_at", "generate_clip", "iterate_clips", "write_dataset"]
