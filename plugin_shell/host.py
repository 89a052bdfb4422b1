"""The host-context interface: what a DAW adapter tells the shell, and how the shell hands results back.

Positions and lengths are integer samples at the host rate; bars come from the tempo map.
Clip media are audio files: the host reads them for the shell (at the host rate), and the shell
writes every result as a new file that the host then places.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from bridge.timeline import TempoMap


@dataclass
class Clip:
    """An audio file placed on a track; `start` is its first sample on the timeline.

    The host owns its clips: switching takes mutes a clip in place, but its file never changes.
    """

    path: Path
    start: int
    gain_db: float = 0.0
    fade_in: int = 0  # samples, linear ramps
    fade_out: int = 0
    muted: bool = False  # an inactive take keeps its place but is not heard
    name: str = ""

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        for name in ("start", "fade_in", "fade_out"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"clip {name}: expected a non-negative whole number of samples, got {value!r}")
            setattr(self, name, int(value))


@dataclass
class Track:
    name: str
    clips: list[Clip] = field(default_factory=list)
    gain_db: float = 0.0


@dataclass(frozen=True)
class Selection:
    """A time range [start, end) on the timeline, in host samples.

    `bars` is the exact 0-based bar range when the host selected by bars: samples are rounded, so
    bars read back from them are not (bar 1.5 can come back as 1.49999).
    """

    start: int
    end: int
    bars: tuple[Fraction, Fraction] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.start < self.end:
            raise ValueError(f"selection: need 0 <= start < end, got {self.start}..{self.end}")
        if self.bars is not None and not 0 <= self.bars[0] < self.bars[1]:
            raise ValueError(f"selection bars: need 0 <= start < end, got {self.bars[0]}..{self.bars[1]}")

    @property
    def length(self) -> int:
        return self.end - self.start


class HostContext(Protocol):
    """Everything the shell needs from a host. A DAW adapter implements this; so does the test host."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def tempo_map(self) -> TempoMap: ...

    @property
    def song_end(self) -> int:
        """The sample where the song ends (extend-to-end fills up to here)."""

    @property
    def selection(self) -> Selection | None: ...

    @property
    def media_dir(self) -> Path:
        """The folder where new clip files go."""

    @property
    def project(self) -> str:
        """The project's name, for file names."""

    def track(self, name: str) -> Track: ...

    def read_clip(self, clip: Clip) -> np.ndarray:
        """The clip's audio as float32 (2, samples) at the host rate, before gain and fades."""

    def place_clip(
        self, track: str, clip: Clip, *, take_of: Clip | None = None, placement: str = "new_take_lane"
    ) -> Clip:
        """Add a new clip for `track` and return it as placed. `take_of` is the clip it is a new take of
        (inpaint, variation); `placement` is the DAW preset's rule (`daw_presets.schema.PLACEMENTS`),
        honoured as far as the host can."""

    def progress(self, event: dict) -> None:
        """A progress event from the backend: {"stage": str, "i": int, "n": int}."""

    def cancelled(self) -> bool:
        """True once the user asked to stop the running request."""

