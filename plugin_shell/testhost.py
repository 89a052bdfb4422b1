"""The offline test host: an arrangement of tracks and clips on pedalboard, rendered to one file.

It implements the host-context interface (`plugin_shell.host.HostContext`), so every shell workflow
runs end to end without a DAW. Clip files are read (`sa3_engine.audio.read_audio`: WAV sample-exactly)
and resampled to the host rate once per file version; each track and the master bus carry a `pedalboard.Pedalboard`
effect chain.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path

import numpy as np
from pedalboard import Pedalboard, Plugin

from bridge.timeline import TempoMap
from plugin_shell import host
from plugin_shell.host import Clip, Selection
from sa3_engine.audio import check_finite, read_audio, resample, to_channels, write_wav


@dataclass
class Track(host.Track):
    effects: Pedalboard = field(default_factory=Pedalboard)


class Arrangement:
    """Tracks of clips on one timeline at `sample_rate`, with a tempo map and a master effect chain.

    `song_end` defaults to the end of the last heard clip. `on_progress` receives the shell's
    progress events; `cancel()` makes the running (and any later) request stop until `cancel_requested`
    is cleared. `project` names the project in result file names.
    """

    def __init__(
        self, sample_rate: int, tempo_map: TempoMap, media_dir: str | os.PathLike, *,
        song_end: int | None = None, master: Iterable[Plugin] = (),
        on_progress: Callable[[dict], None] | None = None, project: str = "untitled",
    ) -> None:
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise ValueError(f"sample_rate: expected a positive whole number of Hz, got {sample_rate!r}")
        self.sample_rate = sample_rate
        self.tempo_map = tempo_map
        self.media_dir = Path(media_dir)
        self.master = Pedalboard(list(master))
        self.tracks: dict[str, Track] = {}
        self.selection: Selection | None = None
        self.on_progress = on_progress
        self.cancel_requested = False
        self.project = project
        self._song_end = song_end
        self._audio: dict[Path, tuple[tuple, np.ndarray]] = {}  # file -> (its stat stamp, audio at the host rate)

    # -- building ----------------------------------------------------------------------------

    def add_track(self, name: str, *, effects: Iterable[Plugin] = (), gain_db: float = 0.0) -> Track:
        if name in self.tracks:
            raise ValueError(f"track: {name!r} already exists")
        self.tracks[name] = Track(name, gain_db=gain_db, effects=Pedalboard(list(effects)))
        return self.tracks[name]

    def add_clip(
        self, track: str, path: str | os.PathLike, *, start: int | None = None, bar: float | Fraction | None = None,
        gain_db: float = 0.0, fade_in: int = 0, fade_out: int = 0, name: str = "",
    ) -> Clip:
        """Place an existing audio file at sample `start` or at 0-based `bar` (exactly one of them)."""
        if (start is None) == (bar is None):
            raise ValueError("clip position: give exactly one of start (samples) or bar")
        if not Path(path).is_file():
            raise ValueError(f"clip path: no such file {path}")
        if start is None:
            start = self.bar_to_sample(bar)
        clip = Clip(Path(path), start, gain_db=gain_db, fade_in=fade_in, fade_out=fade_out, name=name)
        self.track(track).clips.append(clip)
        return clip

    def bar_to_sample(self, bar: float | Fraction) -> int:
        return self.tempo_map.bar_to_sample(bar, self.sample_rate)

    def select(self, start: int, end: int) -> Selection:
        self.selection = Selection(start, end)
        return self.selection

    def select_bars(self, start_bar: float | Fraction, end_bar: float | Fraction) -> Selection:
        start, end = self.tempo_map.bar_range_to_samples(start_bar, end_bar, self.sample_rate)
        self.selection = Selection(start, end, bars=(Fraction(start_bar), Fraction(end_bar)))
        return self.selection

    def cancel(self) -> None:
        self.cancel_requested = True

    # -- the host-context interface ----------------------------------------------------------

    @property
    def song_end(self) -> int:
        if self._song_end is not None:
            return self._song_end
        return max((c.start + self.clip_length(c) for t in self.tracks.values() for c in t.clips if not c.muted),
                   default=0)

    @song_end.setter
    def song_end(self, value: int | None) -> None:
        self._song_end = value

    def track(self, name: str) -> Track:
        if name not in self.tracks:
            raise ValueError(f"track: no track named {name!r} (have: {', '.join(self.tracks) or 'none'})")
        return self.tracks[name]

    def read_clip(self, clip: Clip) -> np.ndarray:
        """The clip's file at the host rate, read-only: decoded and resampled once per file version
        (a file replaced or rewritten is read again)."""
        try:
            stat = clip.path.stat()
        except FileNotFoundError:
            raise FileNotFoundError(f"clip path: no such file {clip.path}") from None
        stamp = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
        cached = self._audio.get(clip.path)
        if cached is None or cached[0] != stamp:
            audio, rate = read_audio(clip.path)
            if not np.isfinite(audio).all():  # NaN/inf never reach the mix
                raise ValueError(f"clip path: {clip.path} holds NaN or infinite samples")
            audio = to_channels(resample(audio, rate, self.sample_rate), 2)
            audio.setflags(write=False)
            cached = self._audio[clip.path] = (stamp, audio)
        return cached[1]

    def clip_length(self, clip: Clip) -> int:
        return self.read_clip(clip).shape[1]

    def place_clip(
        self, track: str, clip: Clip, *, take_of: Clip | None = None, placement: str = "new_take_lane"
    ) -> Clip:
        """Place a result by the DAW preset's rule:

        - new_take_lane: on `track`; a take becomes the active take over `take_of` (muted, kept).
        - new_track_below: on a new empty track right below `track`; a take still
          mutes `take_of`, so the mix plays the new one.
        - same_track_after: on `track`; a take goes right after the end of `take_of`, which stays heard.
        """
        clips = self.track(track).clips
        if take_of is not None and not any(c is take_of for c in clips):
            raise ValueError(f"take_of: that clip is not on track {track!r}")
        if placement == "new_track_below":
            track = self._insert_track_below(track)
        elif placement == "same_track_after":
            if take_of is not None:
                clip = replace(clip, start=take_of.start + self.clip_length(take_of))
            take_of = None
        elif placement != "new_take_lane":
            raise ValueError(f"placement: expected new_take_lane, new_track_below or same_track_after, got {placement!r}")
        if take_of is not None:
            take_of.muted = True
        self.track(track).clips.append(clip)
        return clip

    def progress(self, event: dict) -> None:
        if self.on_progress is not None:
            self.on_progress(event)

    def cancelled(self) -> bool:
        return self.cancel_requested

    def _insert_track_below(self, above: str) -> str:
        """A new empty track right below `above`, named after it; returns its name."""
        name, count = f"{above} SA3", 1
        while name in self.tracks:
            count += 1
            name = f"{above} SA3 {count}"
        tracks = {**self.tracks, name: Track(name)}
        names = list(self.tracks)
        names.insert(names.index(above) + 1, name)
        self.tracks = {n: tracks[n] for n in names}
        return name

    # -- mixing ------------------------------------------------------------------------------

    def render_track(self, name: str, length: int | None = None) -> np.ndarray:
        """One track's heard clips with gain and fades, through its effects: (2, length)."""
        track = self.track(name)
        length = self.song_end if length is None else length
        bus = np.zeros((2, length), dtype=np.float32)
        for clip in track.clips:
            if clip.muted or clip.start >= length:
                continue
            audio = _faded(self.read_clip(clip), clip.fade_in, clip.fade_out) * _gain(clip.gain_db)
            audio = audio[:, : length - clip.start]
            bus[:, clip.start : clip.start + audio.shape[1]] += audio
        return track.effects(bus, self.sample_rate) * _gain(track.gain_db)

    def clips_past_end(self) -> list[tuple[str, Clip, int]]:
        """(track, clip, end sample) of every heard clip that runs past `song_end`: the mix cuts them there."""
        end = self.song_end
        return [(name, clip, clip.start + self.clip_length(clip)) for name, track in self.tracks.items()
                for clip in track.clips if not clip.muted and clip.start + self.clip_length(clip) > end]

    def mix(self) -> np.ndarray:
        """The master bus from the start to `song_end`, after the master effects: (2, song_end)."""
        length = self.song_end
        bus = np.zeros((2, length), dtype=np.float32)
        for name in self.tracks:
            bus += self.render_track(name, length)
        return check_finite(self.master(bus, self.sample_rate), "the mix")

    def render(self, path: str | os.PathLike, *, bit_depth: str = "24") -> Path:
        """Write the mixdown at the host rate (atomically); bit_depth '16', '24' or 'float'."""
        return write_wav(path, self.mix(), self.sample_rate, bit_depth=bit_depth)


def _gain(db: float) -> np.float32:
    return np.float32(10.0 ** (db / 20.0))


def _faded(audio: np.ndarray, fade_in: int, fade_out: int) -> np.ndarray:
    """Linear fades over the first `fade_in` and last `fade_out` samples (a copy)."""
    audio = audio.copy()
    n_in, n_out = min(fade_in, audio.shape[1]), min(fade_out, audio.shape[1])
    audio[:, :n_in] *= _ramp(n_in)
    audio[:, audio.shape[1] - n_out :] *= _ramp(n_out)[::-1]
    return audio


def _ramp(n: int) -> np.ndarray:
    return (np.arange(n, dtype=np.float32) + 0.5) / max(n, 1)
