"""Progress and timing of a generation: per-stage step counters across windows, and wall time per stage."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def timed(timings: dict | None, key: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = timings.get(key, 0.0) + time.perf_counter() - start


class Progress:
    """Per-stage counters running across windows and items, reported as {"stage", "i", "n"}."""

    def __init__(self, callback: Callable[[dict], None] | None, totals: dict[str, int]):
        self.callback, self.totals = callback, totals
        self.done = dict.fromkeys(totals, 0)

    def advance(self, stage: str) -> None:
        self.done[stage] += 1
        if self.callback is not None:
            self.callback({"stage": stage, "i": self.done[stage], "n": self.totals[stage]})


# --------------------------------------------------------------------------------------------- pipeline
