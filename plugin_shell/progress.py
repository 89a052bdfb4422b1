"""Progress on a terminal: the backend's {"stage", "i", "n"} events as one status line per task."""

from __future__ import annotations

import sys
from typing import TextIO


class ProgressLine:
    """Shows each event as `<task>: <stage> i/n`, rewriting one line in place; `print` ends that line
    first, so messages never land in the middle of it. Used by `sa3 render` and `sa3 demo`."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.task = ""
        self.open = False

    def __call__(self, event: dict) -> None:
        if not event.get("n"):
            return
        label = f"{self.task}: " if self.task else ""
        print(f"\r  {label}{event.get('stage', '')} {event.get('i', 0)}/{event['n']}   ", end="", file=self.stream,
              flush=True)
        self.open = True

    def print(self, text: str) -> None:
        self.end()
        print(text, file=self.stream, flush=True)

    def end(self) -> None:
        """Finish the status line, if one is showing."""
        if self.open:
            print(file=self.stream, flush=True)
            self.open = False
