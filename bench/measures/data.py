"""Prompts with their ground truth, and reference clips, from the synthetic generator itself.

The training set is dataset seed 0, clips ``numpy.random.default_rng([0, index])`` for index 0..1599
(``synth.dataset.clip_at``). Everything here is drawn from three-word seed sequences ``[PURPOSE,
category number, i]`` that share no state with those, one purpose per use, so prompts, classifier
training clips, validation clips and editing sources are disjoint from the training set and from each
other. Each clip goes through ``synth.dataset.generate_clip``, so its captions are made exactly as the
training captions were (the same templates, paraphrases and facts).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sa3_engine.training.synth.core import SAMPLE_RATE, Clip
from sa3_engine.training.synth.dataset import CATEGORIES, generate_clip

TRAINING_DATASET = {"seed": 0, "indices": [0, 1599]}  # what the model saw; never drawn here
PROMPTS, VALIDATION, CLASSIFIER, EDITING = 101, 102, 103, 104  # one seed-sequence word per purpose
LOOP_CATEGORIES = ("drums", "bass", "lead", "pad", "pluck", "arp")
KEY_CATEGORIES = ("bass", "lead")


def clip(purpose: int, category: str, i: int) -> Clip:
    """Clip ``i`` of ``category`` for ``purpose``, reproducible alone."""
    c = generate_clip(np.random.default_rng([purpose, CATEGORIES.index(category), i]), category)
    c.meta["index"] = i
    return c


def clips(purpose: int, category: str, count: int, *, balance_tonal: bool = False) -> list[Clip]:
    """``count`` clips of ``category``; ``balance_tonal`` (SFX): as many tonal as noisy ones (the tonal
    half first), taking clips in order and skipping those whose half is full."""
    if not balance_tonal:
        return [clip(purpose, category, i) for i in range(count)]
    want = {True: (count + 1) // 2, False: count // 2}
    chosen: dict[bool, list[Clip]] = {True: [], False: []}
    i = 0
    while any(len(chosen[t]) < want[t] for t in want):
        c = clip(purpose, category, i)
        if len(chosen[c.meta["tonal"]]) < want[c.meta["tonal"]]:
            chosen[c.meta["tonal"]].append(c)
        i += 1
    return chosen[True] + chosen[False]


@dataclass(frozen=True)
class Prompt:
    """One generation to ask for: the caption, the exact length, the seed, and the facts to check."""

    category: str
    text: str
    samples: int  # the clip's own length: whole bars at its BPM for loops
    seed: int
    index: int  # of the synthetic clip the caption describes: ``clip(PROMPTS, category, index)``
    truth: dict  # bpm, meter, bars, key, key_name, scale, tonal, loop, subtype, instrument, ...

    @property
    def seconds(self) -> float:
        return self.samples / SAMPLE_RATE


def prompts(category: str, count: int) -> list[Prompt]:
    """``count`` prompts of ``category``, generation seeds 0..count-1. Prompt i uses caption ``i % 4`` of
    its clip, so the tagged house style and the paraphrases (plain list, sentence) all appear, as in
    training, where one of the four captions is drawn per use."""
    out = []
    for i, c in enumerate(clips(PROMPTS, category, count, balance_tonal=category == "sfx")):
        index = int(c.meta["index"])
        samples = int(c.audio.shape[1])
        if round(samples / SAMPLE_RATE * SAMPLE_RATE) != samples:  # the pipeline cuts to round(seconds * sr)
            raise AssertionError(f"{samples} samples do not survive the seconds round trip")
        truth = {k: v for k, v in c.meta.items() if k not in ("effects", "pitches")}
        out.append(Prompt(category, c.captions[i % len(c.captions)], samples, i, index, truth))
    return out


def loop_sources(count: int, categories: tuple[str, ...], min_bars: int, min_seconds: float, max_seconds: float,
                 start: int = 0) -> list[Clip]:
    """Editing sources: synthetic loops (categories in turn, clips ``start``, ``start + 1``, ...) repeated to
    at least ``min_bars`` bars and ``min_seconds`` (a loop is meant to repeat; tiling it is seamless by
    construction); a loop that would then last longer than ``max_seconds`` is skipped, so an edit stays
    one sampler window of the small model."""
    out = []
    i = start
    while len(out) < count:
        c = clip(EDITING, categories[len(out) % len(categories)], i)
        i += 1
        bars = c.meta["bars"]
        bar_samples = c.audio.shape[1] / bars
        reps = max(int(np.ceil(min_bars / bars)), int(np.ceil(min_seconds * SAMPLE_RATE / c.audio.shape[1])))
        if reps * c.audio.shape[1] > max_seconds * SAMPLE_RATE:
            continue
        c.audio = np.tile(c.audio, (1, reps))
        c.meta = {**c.meta, "bars": bars * reps, "tiled": reps, "bar_samples": bar_samples}
        out.append(c)
    return out
