"""`BridgeHost`: the `HostContext` a host bridge request describes.

The DAW owns the timeline; this host only mirrors what the request told about it (one track, at
most one source clip) and records what the shell asks to place, for the reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from plugin_shell.host import Clip, Selection, Track
from sa3_engine.audio import read_audio, resample, to_channels

from .request import Request, RequestError


@dataclass
class Placed:
    """A clip the shell placed: the reply tells the DAW to put it there."""

    track: str
    clip: Clip
    take_of: Clip | None
    placement: str


class BridgeHost:
    """Implements `plugin_shell.host.HostContext` from a `Request`.

    `on_progress` receives the shell's progress events; `cancelled()` turns true once `cancel()` was
    called (a signal handler does) or the request's cancel file exists.
    """

    def __init__(self, request: Request, on_progress: Callable[[dict], None] | None = None) -> None:
        self.request = request
        self.sample_rate = request.sample_rate
        self.tempo_map = request.tempo_map
        self.media_dir = request.output_dir
        self.project = request.project
        self.on_progress = on_progress
        self.placed: list[Placed] = []
        self._cancel = False
        self._track = Track(request.track)
        self.source: Clip | None = None
        if request.clip is not None:
            self.source = Clip(request.clip.path, request.clip.position, name=request.clip.name)
            self._track.clips.append(self.source)

    @property
    def song_end(self) -> int:
        return self.request.song_end if self.request.song_end is not None else 0

    @property
    def selection(self) -> Selection | None:
        if self.request.selection is not None:
            return Selection(*self.request.selection)
        if self.request.position is not None:  # a loop at the edit point: a one-sample range there
            return Selection(self.request.position, self.request.position + 1)
        return None

    def track(self, name: str) -> Track:
        if name != self._track.name:
            raise ValueError(f"track: the request names track {self._track.name!r}, not {name!r}")
        return self._track

    def read_clip(self, clip: Clip) -> np.ndarray:
        """The source clip as the DAW plays it: its `length` samples from `offset`, at the host rate."""
        if clip is not self.source:
            raise ValueError(f"clip: {clip.path.name} is not the request's clip")
        spec = self.request.clip
        audio = to_channels(self._read(spec), 2)
        if spec.offset + spec.length > audio.shape[1]:
            raise RequestError(
                "clip.length",
                f"the clip plays samples {spec.offset}..{spec.offset + spec.length} of {spec.path.name}, "
                f"which has {audio.shape[1]} samples at {self.sample_rate} Hz "
                f"({audio.shape[1] / self.sample_rate:.3f} s)",
            )
        audio = audio[:, spec.offset : spec.offset + spec.length]
        audio.setflags(write=False)
        return audio

    def _read(self, spec) -> np.ndarray:
        """The clip's file, or its channels from their files, at the host rate."""
        if not spec.channels:
            audio, rate = read_audio(spec.path)
            return resample(audio, rate, self.sample_rate)
        parts = []
        for i, (path, channel) in enumerate(spec.channels):
            audio, rate = read_audio(path)
            if channel >= audio.shape[0]:
                raise RequestError(f"clip.channels[{i}].channel",
                                   f"{path.name} has {audio.shape[0]} channel(s), no channel {channel}")
            parts.append(resample(audio[channel : channel + 1], rate, self.sample_rate))
        length = min(p.shape[1] for p in parts)
        return np.concatenate([p[:, :length] for p in parts])

    def place_clip(self, track: str, clip: Clip, *, take_of: Clip | None = None,
                   placement: str = "new_take_lane") -> Clip:
        self.track(track).clips.append(clip)
        self.placed.append(Placed(track, clip, take_of, placement))
        return clip

    def progress(self, event: dict) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def cancel(self) -> None:
        self._cancel = True

    def cancelled(self) -> bool:
        cancel_file = self.request.cancel_file
        return self._cancel or (cancel_file is not None and Path(cancel_file).exists())
