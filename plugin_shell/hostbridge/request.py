"""Host bridge requests (schema version 1): a DAW script's JSON, checked and turned into plain values.

`docs/host-bridge.md` is the contract. Every problem is a `RequestError` naming the field
(`clip.length`, `tempo_map.tempos[1].bpm`); positions in such messages are also given in bars and
seconds, as the producer sees them in the DAW.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from bridge.timeline import Meter, MeterChange, TempoChange, TempoMap

SCHEMA_VERSION = 1
VERSION_KEY = "sa3_host_bridge"
ACTIONS = ("loop", "inpaint", "extend", "variation")
NEEDS_CLIP = ("inpaint", "extend", "variation")
DEFAULT_MODEL = "tiny-random"
DEFAULT_DAW = "ardour"
DEFAULT_TEMPLATE = "music_loop"
TOP_LEVEL = {
    VERSION_KEY, "action", "sample_rate", "tempo_map", "song_end", "selection", "position", "track", "clip",
    "prompt", "negative_prompt", "key", "bars", "seed", "init_noise_level", "preset", "daw", "steps", "cfg_scale",
    "warp", "output_dir", "project", "engine", "cancel_file",
}


class RequestError(ValueError):
    """A request the bridge cannot run; `field` names where (dotted, with list indices)."""

    def __init__(self, field: str, problem: str):
        super().__init__(f"{field}: {problem}")
        self.field, self.problem = field, problem


@dataclass(frozen=True)
class SourceClip:
    """The clip an action works on, as the DAW plays it: `length` samples of `path` from `offset`,
    starting at timeline sample `position`. `channels`, when the DAW keeps one source per channel (Ardour),
    are (file, channel in that file) pairs; `path` is then the first one's file."""

    path: Path
    position: int
    length: int
    offset: int = 0
    name: str = ""
    channels: tuple[tuple[Path, int], ...] = ()

    @property
    def end(self) -> int:
        return self.position + self.length


@dataclass(frozen=True)
class Engine:
    model: str = DEFAULT_MODEL
    connection_file: Path | None = None  # None: the default engine of this user
    start: bool = True  # start one when none runs
    models_dir: Path | None = None


@dataclass(frozen=True)
class Request:
    action: str
    sample_rate: int
    tempo_map: TempoMap
    track: str
    output_dir: Path
    song_end: int | None = None
    selection: tuple[int, int] | None = None
    position: int | None = None
    clip: SourceClip | None = None
    prompt: str = ""
    negative_prompt: str | None = None
    key: str = ""
    bars: int = 4
    seed: int = -1
    init_noise_level: float = 0.7
    preset: str = DEFAULT_TEMPLATE
    daw: str = DEFAULT_DAW
    steps: int | None = None
    cfg_scale: float | None = None
    warp: bool = True
    project: str = "untitled"
    engine: Engine = Engine()
    cancel_file: Path | None = None

    def where(self, sample: int) -> str:
        """A timeline sample as the producer reads it: 'sample 96000 (bar 2 beat 1, 2.000 s)'."""
        return describe(self.tempo_map, self.sample_rate, sample)


def describe(tempo_map: TempoMap, sample_rate: int, sample: int) -> str:
    seconds = sample / sample_rate
    try:
        bbt = tempo_map.bar_to_bbt(tempo_map.sample_to_bar(sample, sample_rate))
        bar = f"bar {bbt.bar} beat {bbt.beat}" + (f" tick {bbt.tick}" if bbt.tick else "") + ", "
    except ValueError:
        bar = ""
    return f"sample {sample} ({bar}{seconds:.3f} s)"


# -- field readers -------------------------------------------------------------------------------


def _get(table: dict, name: str, where: str, default: Any = ..., kind: type | tuple = object) -> Any:
    field = f"{where}.{name}" if where else name
    if name not in table or table[name] is None:
        if default is ...:
            raise RequestError(field, "missing")
        return default
    value = table[name]
    if kind is not object and (isinstance(value, bool) and kind is not bool or not isinstance(value, kind)):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise RequestError(field, f"expected {_article(names)}, got {value!r}")
    return value


def _article(names: str) -> str:
    words = {"str": "text", "int": "whole number", "dict": "object", "list": "list", "bool": "true or false",
             "float": "number", "Real": "number"}
    return " or ".join(words.get(n, n) for n in names.split(" or "))


def _samples(table: dict, name: str, where: str, default: Any = ...) -> int | None:
    value = _get(table, name, where, default, int)
    if value is not None and value < 0:
        raise RequestError(f"{where}.{name}" if where else name, f"expected a sample position >= 0, got {value}")
    return value


def _number(table: dict, name: str, where: str, default: Any = ...) -> float | None:
    value = _get(table, name, where, default, numbers.Real)
    if value is not None and not math.isfinite(value):
        raise RequestError(f"{where}.{name}" if where else name, f"expected a finite number, got {value!r}")
    return value


def _exact(value: Any, field: str) -> Fraction:
    """A position in quarter notes: a JSON number or an exact fraction written as text ('15/2')."""
    if isinstance(value, str):
        try:
            return Fraction(value.strip())
        except (ValueError, ZeroDivisionError):
            raise RequestError(field, f"expected a number or a fraction like '15/2', got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise RequestError(field, f"expected a number or a fraction like '15/2', got {value!r}")
    return Fraction(value)


def _list(table: dict, name: str, where: str) -> list:
    value = _get(table, name, where, kind=list)
    if not value:
        raise RequestError(f"{where}.{name}", "expected at least one entry")
    return value


# -- the request ---------------------------------------------------------------------------------


def parse_tempo_map(data: Any, sample_rate: int) -> TempoMap:
    """`tempo_map`: tempo changes ({quarter, bpm, note_type?, sample?}) and meter changes ({quarter,
    numerator, denominator}); a tempo change's `sample`, when given, must match the map within a sample."""
    if not isinstance(data, dict):
        raise RequestError("tempo_map", f"expected an object with tempos and meters, got {data!r}")
    tempos, meters = [], []
    for i, entry in enumerate(_list(data, "tempos", "tempo_map")):
        where = f"tempo_map.tempos[{i}]"
        if not isinstance(entry, dict):
            raise RequestError(where, f"expected an object, got {entry!r}")
        quarter = _exact(_get(entry, "quarter", where), f"{where}.quarter")
        bpm, note_type = _number(entry, "bpm", where), _get(entry, "note_type", where, 4, int)
        if not bpm > 0 or note_type < 1:
            raise RequestError(where, f"expected bpm > 0 and note_type >= 1, got {bpm} per {note_type}")
        try:
            tempos.append(TempoChange(quarter, Fraction(bpm) * 4 / note_type))
        except ValueError as error:
            raise RequestError(f"{where}.quarter", str(error)) from None
    for i, entry in enumerate(_list(data, "meters", "tempo_map")):
        where = f"tempo_map.meters[{i}]"
        if not isinstance(entry, dict):
            raise RequestError(where, f"expected an object, got {entry!r}")
        quarter = _exact(_get(entry, "quarter", where), f"{where}.quarter")
        try:
            meter = Meter(_get(entry, "numerator", where, kind=int), _get(entry, "denominator", where, kind=int))
            meters.append(MeterChange(quarter, meter))
        except ValueError as error:
            raise RequestError(where, str(error)) from None
    for name, changes in (("tempos", tempos), ("meters", meters)):
        if changes[0].quarter != 0:
            raise RequestError(f"tempo_map.{name}[0].quarter", f"the first change must be at 0, got {changes[0].quarter}")
        for i in range(1, len(changes)):
            if changes[i].quarter <= changes[i - 1].quarter:
                raise RequestError(f"tempo_map.{name}[{i}].quarter",
                                   f"changes must be in increasing order, got {changes[i].quarter} after "
                                   f"{changes[i - 1].quarter}")
    tempo_map = TempoMap(tuple(tempos), tuple(meters))
    for i, entry in enumerate(data["tempos"]):
        said = _samples(entry, "sample", f"tempo_map.tempos[{i}]", None)
        if said is not None:
            ours = round(tempo_map.quarters_to_seconds(tempos[i].quarter) * sample_rate)
            if abs(ours - said) > 1:
                raise RequestError(f"tempo_map.tempos[{i}].sample",
                                   f"the host puts this tempo change at sample {said}, but the tempos before it "
                                   f"put quarter {tempos[i].quarter} at sample {ours}; the map is incomplete "
                                   "(a missing tempo change or a ramp?)")
    return tempo_map


def parse(data: Any) -> Request:
    """A request dict (parsed JSON) checked field by field; raises `RequestError`."""
    if not isinstance(data, dict):
        raise RequestError("request", f"expected a JSON object, got {type(data).__name__}")
    version = data.get(VERSION_KEY)
    if version != SCHEMA_VERSION:
        raise RequestError(VERSION_KEY, f"this bridge speaks schema version {SCHEMA_VERSION}, got {version!r}")
    unknown = sorted(set(data) - TOP_LEVEL)
    if unknown:
        raise RequestError(unknown[0], f"unknown field (known: {', '.join(sorted(TOP_LEVEL))})")
    action = _get(data, "action", "", kind=str)
    if action not in ACTIONS:
        raise RequestError("action", f"expected one of {', '.join(ACTIONS)}, got {action!r}")
    rate = _get(data, "sample_rate", "", kind=int)
    if not 8000 <= rate <= 768000:
        raise RequestError("sample_rate", f"expected 8000..768000 Hz, got {rate}")
    tempo_map = parse_tempo_map(_get(data, "tempo_map", ""), rate)
    values: dict[str, Any] = {
        "action": action, "sample_rate": rate, "tempo_map": tempo_map,
        "track": _get(data, "track", "", kind=str),
        "output_dir": Path(_get(data, "output_dir", "", kind=str)),
        "song_end": _samples(data, "song_end", "", None),
        "position": _samples(data, "position", "", None),
        "prompt": _get(data, "prompt", "", "", str), "negative_prompt": _get(data, "negative_prompt", "", None, str),
        "key": _get(data, "key", "", "", str), "seed": _get(data, "seed", "", -1, int),
        "preset": _get(data, "preset", "", DEFAULT_TEMPLATE, str), "daw": _get(data, "daw", "", DEFAULT_DAW, str),
        "steps": _get(data, "steps", "", None, int), "cfg_scale": _number(data, "cfg_scale", "", None),
        "warp": _get(data, "warp", "", True, bool), "project": _get(data, "project", "", "untitled", str),
        "bars": _get(data, "bars", "", 4, int),
        "init_noise_level": _number(data, "init_noise_level", "", 0.7),
    }
    if not 1 <= values["bars"] <= 256:
        raise RequestError("bars", f"expected a whole number of bars from 1 to 256, got {values['bars']}")
    if not 0 < values["init_noise_level"] <= 1:
        raise RequestError("init_noise_level", f"expected 0 < init_noise_level <= 1, got {values['init_noise_level']}")
    if values["steps"] is not None and values["steps"] < 1:
        raise RequestError("steps", f"expected at least 1 sampler step, got {values['steps']}")
    cancel = _get(data, "cancel_file", "", None, str)
    values["cancel_file"] = Path(cancel) if cancel else None
    values["engine"] = _engine(_get(data, "engine", "", {}, dict))
    values["selection"] = _selection(data.get("selection"), rate, tempo_map)
    values["clip"] = _clip(data.get("clip")) if data.get("clip") is not None else None
    request = Request(**values)
    _check_action(request)
    return request


def _engine(table: dict) -> Engine:
    unknown = sorted(set(table) - {"model", "connection_file", "start", "models_dir"})
    if unknown:
        raise RequestError(f"engine.{unknown[0]}", "unknown field (known: connection_file, model, models_dir, start)")
    connection_file = _get(table, "connection_file", "engine", None, str)
    models_dir = _get(table, "models_dir", "engine", None, str)
    return Engine(
        model=_get(table, "model", "engine", DEFAULT_MODEL, str),
        connection_file=Path(connection_file) if connection_file else None,
        start=_get(table, "start", "engine", True, bool),
        models_dir=Path(models_dir) if models_dir else None,
    )


def _selection(value: Any, rate: int, tempo_map: TempoMap) -> tuple[int, int] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise RequestError("selection", f"expected an object with start and end samples, got {value!r}")
    start, end = _samples(value, "start", "selection"), _samples(value, "end", "selection")
    if end <= start:
        raise RequestError("selection.end", f"{describe(tempo_map, rate, end)} is not after the start, "
                                            f"{describe(tempo_map, rate, start)}")
    return start, end


def _clip(value: Any) -> SourceClip:
    if not isinstance(value, dict):
        raise RequestError("clip", f"expected an object (path, position, length, offset), got {value!r}")
    if ("path" in value) == ("channels" in value):
        raise RequestError("clip", "give either path (one file) or channels (a file and channel for each)")
    channels = []
    for i, entry in enumerate(_get(value, "channels", "clip", [], list)):
        where = f"clip.channels[{i}]"
        if not isinstance(entry, dict):
            raise RequestError(where, f"expected an object with path and channel, got {entry!r}")
        channels.append((_file(_get(entry, "path", where, kind=str), f"{where}.path"),
                         _samples(entry, "channel", where, 0)))
    if "channels" in value and not 1 <= len(channels) <= 8:
        raise RequestError("clip.channels", f"expected 1 to 8 channels, got {len(channels)}")
    clip = SourceClip(
        path=channels[0][0] if channels else _file(_get(value, "path", "clip", kind=str), "clip.path"),
        position=_samples(value, "position", "clip"),
        length=_samples(value, "length", "clip"),
        offset=_samples(value, "offset", "clip", 0),
        name=_get(value, "name", "clip", "", str),
        channels=tuple(channels),
    )
    if clip.length < 1:
        raise RequestError("clip.length", "expected at least one sample")
    return clip


def _file(text: str, field: str) -> Path:
    path = Path(text)
    if not path.is_absolute():
        raise RequestError(field, f"expected an absolute path, got {text!r}")
    if not path.is_file():
        raise RequestError(field, f"no such file: {path}")
    return path


def _check_action(request: Request) -> None:
    """What each action needs, with positions given in bars and seconds."""
    action, clip, where = request.action, request.clip, request.where
    if action in NEEDS_CLIP and clip is None:
        raise RequestError("clip", f"{action} works on a clip; select a region")
    if action == "loop" and request.position is None and request.selection is None:
        raise RequestError("position", "a loop needs a position (the edit point) or a selection to start at")
    if action == "inpaint":
        if request.selection is None:
            raise RequestError("selection", "inpaint regenerates a selected range; select one inside the clip")
        start, end = request.selection
        if start < clip.position or end > clip.end:
            raise RequestError("selection", f"{where(start)} .. {where(end)} is not inside the clip, which plays "
                                            f"{where(clip.position)} .. {where(clip.end)}")
    if action == "extend":
        if request.song_end is None:
            raise RequestError("song_end", "extend fills up to the song end; set the session end marker")
        if request.song_end <= clip.end:
            raise RequestError("song_end", f"the song ends at {where(request.song_end)}, not after the clip end "
                                           f"at {where(clip.end)}; nothing to extend")
