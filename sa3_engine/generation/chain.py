"""Chained windows: audio longer than one window, each window given the end of the one before as context."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from sa3_engine import audio as audio_io
from sa3_engine.generation.codec import decode_chunks
from sa3_engine.generation.noise import SeededNoise
from sa3_engine.generation.progress import timed

if TYPE_CHECKING:
    from sa3_engine.generation.request import Request

CHAIN_CONTEXT_SECONDS = 10.0  # audio a chained window is given from the one before (at most a third of it)
CHAIN_CROSSFADE_SECONDS = 0.25  # crossfade at each join between chained windows


@dataclass(frozen=True)
class ChainWindow:
    """One window of a chain, in output samples: it covers [offset, offset + length), is given the first
    ``context`` samples of that span as source audio and regenerates from ``regenerate`` on."""

    offset: int
    length: int
    context: int
    regenerate: int


def chain_windows(total: int, window: int, context: int, crossfade: int, source: int = 0) -> list[ChainWindow]:
    """Plan chained windows over ``total`` output samples.

    Without a source the first window is generated whole. Every later window starts ``context`` samples
    before the end of the audio made so far (fewer if less exists) and regenerates from
    ``context - crossfade`` on, so each join is crossfaded over audio that is being replaced anyway;
    right after a caller's source it regenerates from the source's end, leaving the source untouched.
    """
    if not 0 <= crossfade < context < window:
        raise ValueError("need 0 <= crossfade < context < window")
    plan, made = [], source
    if made == 0:
        plan.append(ChainWindow(0, min(total, window), 0, 0))
        made = plan[0].length
    after_source = source > 0
    while made < total:
        ctx = min(context, made)
        length = min(window, ctx + total - made)
        plan.append(ChainWindow(made - ctx, length, ctx, ctx if after_source else max(0, ctx - crossfade)))
        made += length - ctx
        after_source = False
    return plan


def sizes(pipe) -> tuple[int, int, int]:
    window = pipe.geometry.max_samples
    context = min(round(CHAIN_CONTEXT_SECONDS * pipe.sample_rate), window // 3)
    crossfade = min(round(CHAIN_CROSSFADE_SECONDS * pipe.sample_rate), context // 4)
    return window, context, crossfade

def plan(pipe, request: Request, duration: float) -> list[ChainWindow]:
    source = 0 if request.source is None else request.source.shape[1]
    return chain_windows(round(duration * pipe.sample_rate), *sizes(pipe), source=source)

def totals(pipe, request: Request, plans: list[list[ChainWindow]]) -> dict[str, int]:
    chunked, rate = pipe.chunked, pipe.sample_rate
    windows = [w for plan in plans for w in plan]
    return {
        "encode": sum(1 for w in windows if w.context > 0),
        "sample": request.steps * len(windows),
        "decode": sum(decode_chunks(pipe.decoded_frames([w.length / rate])[0], chunked) for w in windows),
    }

def run(pipe, request: Request, item: int, plan: list[ChainWindow], progress, timings: dict):
    """Item ``item`` as chained windows; one generator runs on across its windows."""
    rate = pipe.sample_rate
    out = np.zeros((pipe.channels, round(request.durations[item] * rate)), dtype=np.float32)
    if request.source is not None:
        out[:, : request.source.shape[1]] = request.source
    text, negative = pipe._texts(request, [item], timings)
    generator = torch.Generator().manual_seed(request.seeds[item])
    crossfade = sizes(pipe)[2]
    for w in plan:
        seconds = [w.length / rate]
        audio = {}
        if w.context > 0:
            audio = {"source": out[:, w.offset : w.offset + w.context].copy(), "regions": [(w.regenerate, w.length)]}
        window = pipe._window(request, seconds, text, negative, **audio)
        noise = SeededNoise([generator], pipe.geometry.own_frames(seconds))
        sampled = pipe.sample_window(window, noise, on_step=lambda _: progress.advance("sample"),
                                     on_encode=lambda: progress.advance("encode"), timings=timings)
        with timed(timings, "decode"):
            (generated,) = pipe.decode_items(sampled, seconds, lambda: progress.advance("decode"))
        if w.context > 0:
            generated = audio_io.splice(audio["source"], generated, audio["regions"], crossfade)
        out[:, w.offset : w.offset + w.length] = generated
    return out, len(plan)
