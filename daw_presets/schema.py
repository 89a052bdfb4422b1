"""What each kind of preset file holds, and `validate`, which checks a parsed TOML table against it.

Every error is a `PresetError` naming the file and the field, e.g.
`daw_presets/daws/reaper.toml: sample_rate: must be an integer >= 8000, got -1`.
"""

from __future__ import annotations

import string
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import pedalboard

from sa3_engine.audio import BIT_DEPTHS

PLACEMENTS = ("new_track_below", "new_take_lane", "same_track_after")
# How the integration reaches the DAW (research notes, section 7.4); "offline" is the pedalboard test host;
# "lua_actions" are editor action scripts calling the JSON host bridge (Ardour).
INTEGRATIONS = ("extensions_sdk", "reascript", "ara", "plugin", "offline", "lua_actions")
# What timing the DAW gives us: the whole tempo map, tempo and meter at the playhead only, or one
# song tempo with no meter (Ableton's Extensions SDK).
HOST_TIMINGS = ("tempo_map", "playhead", "song_tempo")
# bar / bar_end: where the result starts and stops, bars from 1 (docs/architecture.md, "Bars and tempo")
FILE_NAME_SLOTS = ("project", "track", "op", "prompt", "seed", "bar", "bar_end", "take", "timestamp")
# A name must vary between generations, so a new result never lands on an old file's name.
UNIQUE_NAME_SLOTS = ("seed", "take", "timestamp")
# The musical context the shell fills in, plus the producer's own words ({prompt}).
PROMPT_SLOTS = ("bpm", "meter", "key", "bars", "prompt")

# SA3's trained track-type tags, as its prompt assistant prepends them.
TRACK_TYPE_TAGS = {
    "music": "TrackType: Music, ",
    "instrument": "TrackType: Instrument, ",
    "sfx": "TrackType: SFX, ",
}


class PresetError(ValueError):
    def __init__(self, source: str, field: str, problem: str):
        super().__init__(f"{source}: {field}: {problem}")


@dataclass(frozen=True)
class DawPreset:
    name: str
    source: str
    display_name: str
    description: str
    sample_rate: int
    bit_depth: int
    file_name: str
    clip_name: str
    placement: str
    integration: str
    host_timing: str

    @property
    def wav_format(self) -> str:
        """The `sa3_engine.audio.write_wav` format name for `bit_depth`."""
        return next(name for name, bits in BIT_DEPTHS.items() if bits == self.bit_depth)

    def summary(self) -> str:
        kind = "float" if self.wav_format == "float" else "PCM"
        return (
            f"{self.display_name}: {self.sample_rate} Hz, {self.bit_depth}-bit {kind}, "
            f"{self.placement.replace('_', ' ')}, {self.integration}, timing from {self.host_timing}"
        )


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    source: str
    description: str
    track_type: str
    template: str
    negative: str
    defaults: Mapping[str, str]

    @property
    def slots(self) -> tuple[str, ...]:
        return template_slots(self.template)

    def summary(self) -> str:
        return f"{self.track_type}: {self.description} (slots: {', '.join(self.slots)})"


@dataclass(frozen=True)
class EffectSpec:
    plugin: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True)
class ChainPreset:
    name: str
    source: str
    description: str
    effects: tuple[EffectSpec, ...]

    def summary(self) -> str:
        return f"{' > '.join(e.plugin for e in self.effects)}: {self.description}"


def template_slots(template: str) -> tuple[str, ...]:
    """The {slot} names in `template`, in order of first use. Raises ValueError on anything but
    plain named slots (no {0}, {a.b}, {x!r} or {x:>4})."""
    slots: list[str] = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise ValueError(f"only plain named slots like {{bpm}} are allowed, got {{{name}}}")
        if name not in slots:
            slots.append(name)
    return tuple(slots)


_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "a table", list: "a list"}


class _Table:
    """One TOML table being read: every getter names the file and field on error, and `done` refuses
    fields nobody asked for (typos)."""

    def __init__(self, data: Any, source: str, where: str = ""):
        if not isinstance(data, dict):
            raise PresetError(source, where or "(file)", f"must be a table, got {data!r}")
        self.data, self.source, self.where, self.read = data, source, where, set()

    def field(self, key: str) -> str:
        return f"{self.where}.{key}" if self.where else key

    def error(self, key: str, problem: str) -> PresetError:
        return PresetError(self.source, self.field(key), problem)

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        self.read.add(key)
        if key not in self.data:
            if default is ...:
                raise self.error(key, "missing")
            return default
        value = self.data[key]
        if isinstance(value, bool) and kind is not bool or not isinstance(value, kind):
            raise self.error(key, f"must be {_TYPE_NAMES[kind]}, got {value!r}")
        return value

    def text(self, key: str, default: Any = ...) -> str:
        value = self.get(key, str, default)
        if not value.strip() and default is ...:
            raise self.error(key, "must not be empty")
        return value

    def choice(self, key: str, choices: tuple) -> Any:
        value = self.get(key, type(choices[0]))
        if value not in choices:
            raise self.error(key, f"must be one of {', '.join(map(str, choices))}; got {value!r}")
        return value

    def pattern(self, key: str, allowed: tuple[str, ...] | None = None) -> str:
        value = self.text(key)
        try:
            slots = template_slots(value)
        except ValueError as exc:
            raise self.error(key, str(exc)) from None
        unknown = [s for s in slots if allowed is not None and s not in allowed]
        if unknown:
            raise self.error(key, f"unknown slot {{{unknown[0]}}}; slots are {', '.join(allowed)}")
        return value

    def done(self) -> None:
        extra = sorted(set(self.data) - self.read)
        if extra:
            raise self.error(extra[0], "unknown field")


def _daw(name: str, table: _Table) -> DawPreset:
    sample_rate = table.get("sample_rate", int)
    if sample_rate < 8000:
        raise table.error("sample_rate", f"must be an integer >= 8000, got {sample_rate}")
    file_name = table.pattern("file_name", FILE_NAME_SLOTS)
    if not set(template_slots(file_name)) & set(UNIQUE_NAME_SLOTS):
        raise table.error(
            "file_name", f"must use one of {{{'}, {'.join(UNIQUE_NAME_SLOTS)}}} so names never repeat"
        )
    return DawPreset(
        name=name,
        source=table.source,
        display_name=table.text("display_name"),
        description=table.text("description"),
        sample_rate=sample_rate,
        bit_depth=table.choice("bit_depth", tuple(sorted(BIT_DEPTHS.values()))),
        file_name=file_name,
        clip_name=table.pattern("clip_name", FILE_NAME_SLOTS),
        placement=table.choice("placement", PLACEMENTS),
        integration=table.choice("integration", INTEGRATIONS),
        host_timing=table.choice("host_timing", HOST_TIMINGS),
    )


def _prompt(name: str, table: _Table) -> PromptTemplate:
    track_type = table.choice("track_type", tuple(TRACK_TYPE_TAGS))
    template = table.pattern("template", PROMPT_SLOTS)
    if not template.startswith(TRACK_TYPE_TAGS[track_type]):
        raise table.error(
            "template", f"a {track_type} template must start with {TRACK_TYPE_TAGS[track_type]!r}"
        )
    # T5 keeps the first 256 tokens: the musical facts go first, so a long prompt loses its own tail
    if "{prompt}" in template and not template.rstrip().endswith("{prompt}"):
        raise table.error("template", "{prompt} must come last, after the tags")
    defaults = _Table(table.get("defaults", dict, {}), table.source, table.field("defaults"))
    slots = template_slots(template)
    for key in defaults.data:
        if key not in slots:
            raise defaults.error(key, f"is not a slot of the template ({', '.join(slots)})")
        defaults.text(key)
    defaults.done()
    return PromptTemplate(
        name=name,
        source=table.source,
        description=table.text("description"),
        track_type=track_type,
        template=template,
        negative=table.text("negative", ""),
        defaults=MappingProxyType(dict(defaults.data)),
    )


def _chain(name: str, table: _Table) -> ChainPreset:
    effects = table.get("effects", list)
    if not effects:
        raise table.error("effects", "must list at least one effect")
    return ChainPreset(
        name=name,
        source=table.source,
        description=table.text("description"),
        effects=effect_specs(effects, table.source, "effects"),
    )


def effect_specs(entries: Any, source: str, where: str) -> tuple[EffectSpec, ...]:
    """`[{plugin = "Reverb", room_size = 0.3}, ...]` (chain presets, song files), each checked by building it."""
    if not isinstance(entries, list):
        raise PresetError(source, where, f"must be a list of effect tables, got {entries!r}")
    specs = []
    for index, entry in enumerate(entries):
        effect = _Table(entry, source, f"{where}[{index}]")
        spec = EffectSpec(
            effect.text("plugin"), MappingProxyType({k: v for k, v in entry.items() if k != "plugin"})
        )
        make_plugin(spec, source, effect.where)  # pedalboard is the judge of names and values
        specs.append(spec)
    return tuple(specs)


_READERS = {"daw": _daw, "prompt": _prompt, "chain": _chain}


def validate(kind: str, name: str, data: Any, source: str) -> DawPreset | PromptTemplate | ChainPreset:
    """Check one parsed preset file of `kind` ("daw", "prompt" or "chain") and return it as a dataclass."""
    if kind not in _READERS:
        raise ValueError(f"unknown preset kind {kind!r}; kinds are {', '.join(_READERS)}")
    table = _Table(data, source)
    preset = _READERS[kind](name, table)
    table.done()
    return preset


# -- pedalboard ---------------------------------------------------------------------------------


def effect_classes() -> dict[str, type]:
    """pedalboard's built-in effects, by class name: containers and external (VST3/AU) hosts excluded."""
    return {
        name: cls
        for name, cls in vars(pedalboard).items()
        if isinstance(cls, type)
        and issubclass(cls, pedalboard.Plugin)
        and not issubclass(cls, (pedalboard.PluginContainer, pedalboard.ExternalPlugin))
        and cls is not pedalboard.Plugin
        and not name.startswith("_")
    }


def _parameters(cls: type) -> dict[str, Any]:
    """The settable parameters of a pedalboard effect class, each with its default value when the
    class can be built without arguments (the default tells floats, booleans and enums apart)."""
    names = [
        key
        for klass in cls.__mro__
        if klass is not pedalboard.Plugin and issubclass(klass, pedalboard.Plugin)
        for key, value in vars(klass).items()
        if isinstance(value, property) and not key.startswith("_")
    ]
    try:
        default = cls()
    except (TypeError, ValueError, RuntimeError):
        default = None
    return {key: getattr(default, key, None) for key in names}


def _parameter_value(value: Any, default: Any, source: str, field: str) -> Any:
    members = getattr(type(default), "__members__", None)
    if members is not None:  # a pybind11 enum such as LadderFilter.Mode
        if value not in members:
            raise PresetError(source, field, f"must be one of {', '.join(members)}; got {value!r}")
        return members[value]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise PresetError(source, field, f"must be a boolean, got {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise PresetError(source, field, f"must be a number, got {value!r}")
        return float(value)
    return value


def make_plugin(spec: EffectSpec, source: str, where: str) -> pedalboard.Plugin:
    """The pedalboard effect `spec` describes; unknown plugins, parameters or values raise PresetError."""
    classes = effect_classes()
    cls = classes.get(spec.plugin)
    if cls is None:
        raise PresetError(
            source,
            f"{where}.plugin",
            f"unknown pedalboard effect {spec.plugin!r}; effects are {', '.join(classes)}",
        )
    known = _parameters(cls)
    arguments = {}
    for key, value in spec.parameters.items():
        if key not in known:
            raise PresetError(
                source,
                f"{where}.{key}",
                f"{spec.plugin} has no parameter {key!r}; it has {', '.join(known) or 'none'}",
            )
        arguments[key] = _parameter_value(value, known[key], source, f"{where}.{key}")
    try:
        return cls(**arguments)
    except (TypeError, ValueError, RuntimeError) as exc:
        reason = str(exc).splitlines()[0]
        raise PresetError(source, where, f"pedalboard refused {spec.plugin}({arguments}): {reason}") from None
