"""The synthetic dataset: a category mix, one clip per (seed, index), an in-memory stream and a writer.

Clip ``index`` of dataset ``seed`` is drawn from its own generator, ``numpy.random.default_rng([seed,
index])``, so any clip can be regenerated alone, a dataset can be written in parallel or resumed, and
the first N clips of a bigger dataset equal a smaller one.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from ...audio import write_json, write_wav
from .captions import captions
from .chords import pad_loop
from .core import SAMPLE_RATE, Clip
from .drums import drum_loop
from .melodic import bass_loop, lead_loop
from .plucks import arp_loop, pluck_loop
from .sfx import sfx_clip

MAKERS: dict[str, Callable[[np.random.Generator], Clip]] = {
    "drums": drum_loop,
    "bass": bass_loop,
    "lead": lead_loop,
    "pad": pad_loop,
    "pluck": pluck_loop,
    "arp": arp_loop,
    "sfx": sfx_clip,
}
CATEGORIES = tuple(MAKERS)
# Default mix: drums and SFX most often (the prompt-adherence checks weigh them most).
DEFAULT_WEIGHTS = {"drums": 0.24, "bass": 0.13, "lead": 0.13, "pad": 0.1, "pluck": 0.1, "arp": 0.1, "sfx": 0.2}
CAPTIONS_PER_CLIP = 4


def _check_categories(categories: Sequence[str] | None) -> tuple[str, ...]:
    if categories is None:
        return CATEGORIES
    unknown = [c for c in categories if c not in MAKERS]
    if unknown or not categories:
        raise ValueError(f"categories: unknown {unknown} (choose from {', '.join(CATEGORIES)})")
    return tuple(categories)


def generate_clip(rng: np.random.Generator, category: str | None = None,
                  categories: Sequence[str] | None = None) -> Clip:
    """One clip with its captions; ``category`` fixed, or drawn from ``categories`` by the default mix."""
    if category is None:
        pool = _check_categories(categories)
        weights = np.array([DEFAULT_WEIGHTS[c] for c in pool])
        category = str(pool[int(rng.choice(len(pool), p=weights / weights.sum()))])
    elif category not in MAKERS:
        raise ValueError(f"category: unknown {category!r} (choose from {', '.join(CATEGORIES)})")
    clip = MAKERS[category](rng)
    clip.meta["category"] = category
    clip.meta["seconds"] = round(clip.seconds, 4)
    clip.captions = captions(clip.meta, category, rng, CAPTIONS_PER_CLIP)
    return clip


def clip_at(seed: int, index: int, categories: Sequence[str] | None = None) -> Clip:
    """Clip ``index`` of the dataset ``seed`` (independent of every other index)."""
    clip = generate_clip(np.random.default_rng([seed, index]), categories=categories)
    clip.meta.update({"seed": seed, "index": index})
    return clip


def iterate_clips(seed: int, start: int = 0, stop: int | None = None,
                  categories: Sequence[str] | None = None) -> Iterator[Clip]:
    """Clips ``start``, ``start + 1``, ... (endless when ``stop`` is None): the training stream."""
    categories = _check_categories(categories)
    index = start
    while stop is None or index < stop:
        yield clip_at(seed, index, categories)
        index += 1


def _check_resumable(path: Path, seed: int, categories: tuple[str, ...]) -> None:
    """An existing clip may be kept only if it belongs to the dataset being written."""
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path} exists but is not a readable clip description ({exc}); remove it") from None
    if old.get("seed") != seed or old.get("category") not in categories:
        raise ValueError(f"{path.parent} already holds clips of another dataset (seed {old.get('seed')}, "
                         f"category {old.get('category')!r}); choose an empty --out folder")


def record(clip: Clip) -> dict:
    """The JSON sidecar: captions and every fact, with plain types."""
    return {"prompt": clip.caption, "captions": clip.captions, "sample_rate": SAMPLE_RATE,
            "samples": int(clip.audio.shape[1]), **clip.meta}


def write_dataset(out: str | os.PathLike, count: int, seed: int, start: int = 0,
                  categories: Sequence[str] | None = None,
                  progress: Callable[[int, Clip], None] | None = None) -> Path:
    """Write clips ``start .. start + count - 1`` as ``NNNNNNNN.wav`` (float32) + ``NNNNNNNN.json``.

    Files are written atomically; a clip whose JSON already exists is skipped, so an interrupted run
    resumes where it stopped (the JSON is written last). ``progress(i, clip)`` is called per clip written.
    """
    if count < 0 or start < 0:
        raise ValueError(f"count and start must not be negative (got count={count}, start={start})")
    categories = _check_categories(categories)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for done, index in enumerate(range(start, start + count)):
        stem = out / f"{index:08d}"
        if stem.with_suffix(".json").is_file():
            _check_resumable(stem.with_suffix(".json"), seed, categories)
            continue
        clip = clip_at(seed, index, categories)
        write_wav(stem.with_suffix(".wav"), clip.audio, SAMPLE_RATE, bit_depth="float")
        write_json(stem.with_suffix(".json"), record(clip))
        if progress is not None:
            progress(done, clip)
    return out
