"""Placing audio files into a saved Ardour 7 session by editing its XML, while Ardour is closed.

Headless Ardour (`ardour7-lua`) cannot import audio, and the GUI's import (`Editor:do_import`, what the
editor actions use) exists only with the GUI running. This is the route for headless sessions and the
tests: each file is referenced in place as external sources (one per channel) and added to the track's
playlist as a region at an exact sample, layered above everything already there. Ardour 7 keeps
positions in superclock units, 282,240,000 per second.
"""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET
from pathlib import Path

from sa3_engine.audio import atomic_path, read_audio

SUPERCLOCK_RATE = 282_240_000


def superclock(samples: int, sample_rate: int) -> int:
    ticks, rest = divmod(samples * SUPERCLOCK_RATE, sample_rate)
    if rest:
        raise ValueError(f"sample_rate: {sample_rate} Hz does not divide Ardour's superclock rate exactly")
    return ticks


class Session:
    """One `.ardour` file, edited in memory; `save()` writes it back atomically."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tree = ET.parse(self.path)
        self.root = self.tree.getroot()
        self.sample_rate = int(self.root.get("sample-rate"))
        ids = (int(e.get("id")) for e in self.root.iter() if (e.get("id") or "").isdigit())
        self._ids = itertools.count(max(ids, default=0) + 1)

    def _section(self, tag: str) -> ET.Element:
        section = self.root.find(tag)
        if section is None:
            raise ValueError(f"{self.path.name}: no <{tag}> section; not an Ardour 7 session?")
        return section

    def playlist(self, track: str) -> ET.Element:
        route = next((r for r in self._section("Routes") if r.get("name") == track), None)
        if route is None or route.get("audio-playlist") is None:
            names = [r.get("name") for r in self._section("Routes") if r.get("audio-playlist")]
            raise ValueError(f"track: no audio track named {track!r} (have: {', '.join(names) or 'none'})")
        playlist_id = route.get("audio-playlist")
        return next(p for p in self._section("Playlists") if p.get("id") == playlist_id)

    def add_region(self, track: str, file: str | Path, position: int, *, length: int | None = None,
                   offset: int = 0, name: str | None = None) -> str:
        """`file` (at the session rate) as a region on `track` at sample `position`, playing `length`
        samples (default: the rest of the file) from `offset`, on top of the track's layers; its id."""
        file = Path(file).resolve()
        audio, rate = read_audio(file)
        if rate != self.sample_rate:
            raise ValueError(f"file: {file.name} is at {rate} Hz, the session at {self.sample_rate} Hz")
        length = audio.shape[1] - offset if length is None else length
        if not 0 < length <= audio.shape[1] - offset:
            raise ValueError(f"length: {file.name} has {audio.shape[1]} samples, cannot play {length} from {offset}")
        sources = self._section("Sources")
        source_ids = []
        for channel in range(audio.shape[0]):
            source_ids.append(str(next(self._ids)))
            ET.SubElement(sources, "Source", {
                "name": str(file), "type": "audio", "flags": "", "id": source_ids[-1], "captured-for": "",
                "channel": str(channel), "origin": "",
            })
        playlist = self.playlist(track)
        layer = max((int(r.get("layering-index", 0)) for r in playlist.findall("Region")), default=-1) + 1
        sc = lambda samples: superclock(samples, self.sample_rate)  # noqa: E731
        region_id = str(next(self._ids))
        attributes = {
            "name": name or file.stem, "muted": "0", "opaque": "1", "locked": "0", "whole-file": "0",
            "import": "0", "external": "1", "start": f"a{sc(offset)}", "length": f"a{sc(length)}@a{sc(position)}",
            "stretch": "1", "shift": "1", "layering-index": str(layer), "scale-amplitude": "1", "id": region_id,
            "type": "audio", "channels": str(audio.shape[0]),
        }
        for i, source_id in enumerate(source_ids):
            attributes[f"source-{i}"] = attributes[f"master-source-{i}"] = source_id
        ET.SubElement(playlist, "Region", attributes)
        return region_id

    def set_session_range(self, start: int, end: int) -> None:
        """The session start and end markers (what `ardour7-export` renders; the song end)."""
        locations = self._section("Locations")
        for location in locations.findall("Location"):
            if "IsSessionRange" in location.get("flags", ""):
                locations.remove(location)
        ET.SubElement(locations, "Location", {
            "id": str(next(self._ids)), "name": "session", "start": f"a{superclock(start, self.sample_rate)}",
            "end": f"a{superclock(end, self.sample_rate)}", "flags": "IsSessionRange", "locked": "0",
            "timestamp": "0", "cue": "0",
        })

    def save(self) -> Path:
        with atomic_path(self.path) as tmp:
            self.tree.write(tmp, encoding="UTF-8", xml_declaration=True)
        return self.path
