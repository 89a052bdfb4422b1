"""`sa3 render SONG.toml -o mix.wav`: build an arrangement from a song file, run its steps, render it.

The format is documented in docs/song-format.md; `SONG_FORMAT` is its annotated example, shown by
`sa3 render --help`. Every step is run first against `DryRunBackend` (silence, no model), so a bad
clip, selection or song end is reported before any model loads. The mixdown gets a JSON sidecar.
"""

from __future__ import annotations

import io
import tempfile
import tomllib
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import pedalboard

from bridge.timeline import Meter, TempoMap
from daw_presets import build_chain, build_effects, effect_specs, load_preset
from plugin_shell.backends import Backend, DryRunBackend, PipelineBackend
from plugin_shell.host import Clip
from plugin_shell.progress import ProgressLine
from plugin_shell.shell import DEFAULT_DAW, DEFAULT_TEMPLATE, PluginShell, display_bar, where
from plugin_shell.testhost import Arrangement
from sa3_engine.audio import write_json

SONG_FORMAT = """\
# A song file is TOML. Paths are relative to the song file; an unknown field or a value of the wrong
# type is refused, naming the field. Bars count from 1 as a DAW's ruler shows them and may be
# fractional (1.5 = halfway through bar 1); a range stops where its end bar begins, as a DAW's loop
# locators do: range = [2, 4] is bars 2 and 3.
sample_rate = 48000            # the host rate
length_bars = 8                # optional song length; default: the end of the last clip
template = "music_loop"        # optional prompt template preset (`sa3 presets prompt`)
daw = "offline"                # optional DAW preset: result bit depth, file names, placement

[model]                        # optional
id = "tiny-random"             # a model id or folder
steps = 8
cfg_scale = 1.0

[tempo]                        # bpm (+ meter, changes) or midi = "tempo.mid"
bpm = 120
meter = "4/4"
changes = [{ bar = 5, bpm = 96 }, { bar = 7, meter = "7/8" }]

[master]                       # a chain preset (`sa3 presets chain`) and/or effects, chain first
chain = "loop_glue"
effects = [{ plugin = "Limiter", threshold_db = -1.0 }]   # pedalboard's built-in effects, by class name

[[tracks]]
name = "keys"
gain_db = -3.0
effects = [{ plugin = "Reverb", room_size = 0.3 }]
clips = [{ path = "keys.wav", bar = 1, name = "intro", fade_in = 0.01 }]   # or sample = 0; fades in seconds

[[steps]]                      # run in order; each result is a new clip, `name`d for later steps
op = "loop"                    # loop | inpaint | extend | variation
track = "keys"
name = "keys-loop"
bar = 1                        # loop: where it starts and how many bars
bars = 2
prompt = "warm electric piano" # the producer's words, after the template's musical tags
key = "A minor"                # optional; negative_prompt and seed too
seed = 7
# inpaint: clip = "keys-loop", range = [2, 3] (bar 2 only); extend: clip = "..." (to the song end);
# variation: clip = "...", init_noise_level = 0.7
"""

SONG_FIELDS = {"sample_rate", "length_bars", "template", "daw", "model", "tempo", "master", "tracks", "steps"}
STEP_FIELDS = {
    "loop": {"bar", "bars"},
    "inpaint": {"clip", "range"},
    "extend": {"clip"},
    "variation": {"clip", "init_noise_level"},
}
COMMON_STEP_FIELDS = {"op", "track", "name", "prompt", "negative_prompt", "key", "seed"}
SOURCE = "song"  # how preset errors name the song file in their messages

NUMBER, WHOLE, TEXT, LIST, TABLE = "a number", "a whole number", "a string", "a list", "a table"
_TYPES = {NUMBER: (int, float), WHOLE: (int,), TEXT: (str,), LIST: (list,), TABLE: (dict,)}
_REQUIRED = object()


def dry_run(song: dict, base: Path, sample_rate: int, max_seconds: float) -> None:
    """Run the song's steps against silence (`DryRunBackend`) in a scratch folder: every step is checked as
    the real run will check it (clips, selections inside them, the song end after an extended clip), in
    the user's bars and seconds, before any model loads."""
    with tempfile.TemporaryDirectory(prefix="sa3-render-check-") as scratch:
        arrangement, named = arrange(song, base, Path(scratch))
        run_steps(song, arrangement, named, DryRunBackend(sample_rate, max_seconds), progress=ProgressLine(io.StringIO()))


def write_mix(
    arrangement: Arrangement, path: Path, *, bit_depth: str, song: Path, model: str | None
) -> tuple[Path, list[str]]:
    """Render the mixdown to `path` with a JSON sidecar beside it; returns (path, warnings). A heard clip
    running past the song end is cut there: each one is a warning, printed by the caller and kept in
    the sidecar."""
    rate, tempo_map = arrangement.sample_rate, arrangement.tempo_map
    end = arrangement.song_end
    warnings = [
        f"{clip.name or clip.path.name} on track {track!r} ends at {where(tempo_map, clip_end, rate)}, after the "
        f"song end at {where(tempo_map, end, rate)}: the mixdown cuts it there"
        for track, clip, clip_end in arrangement.clips_past_end()
    ]
    arrangement.render(path, bit_depth=bit_depth)
    tracks = {
        name: [{"path": str(c.path), "name": c.name, "start_sample": c.start,
                "start_bar": display_bar(tempo_map, c.start, rate), "muted": c.muted} for c in track.clips]
        for name, track in arrangement.tracks.items()
    }
    write_json(path.with_suffix(".json"), {
        "command": "render", "file": path.name, "song": str(song), "format": bit_depth, "model": model,
        "sample_rate": rate, "length": end, "seconds": end / rate,
        "end_bar": display_bar(tempo_map, end, rate), "tracks": tracks, "warnings": warnings,
        "created": datetime.now(UTC).isoformat(),
    })
    return path, warnings


def pipeline_backend(model: str, *, models_dir: Path | None = None, device: str | None = None) -> PipelineBackend:
    from sa3_engine.generation.pipeline import Pipeline  # torch is imported only when a song has steps to run

    return PipelineBackend(Pipeline.load(model, models_dir=models_dir, device=device))


def load_song(path: Path) -> dict:
    if path.is_dir():
        raise ValueError(f"song: {path} is a folder; give the song's TOML file (docs/song-format.md)")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a text (TOML) file") from None


def arrange(
    song: dict, base: Path, clips_dir: Path, *, project: str = "untitled"
) -> tuple[Arrangement, dict[str, Clip]]:
    """The arrangement a song describes before its steps run, and its clips by name.

    The steps and presets are checked too (fields, types, tracks, clip names, bars), so a bad step
    fails before any generation rather than after the ones before it.
    """
    _check_fields(song, SONG_FIELDS, "song")
    for key, kind in (("template", "prompt"), ("daw", "daw")):
        if key in song:
            _preset(song, key, kind)
    model = _field(song, "model", TABLE, "", {})
    _check_fields(model, {"id", "steps", "cfg_scale"}, "model")
    _field(model, "id", TEXT, "model", None)
    if _field(model, "steps", WHOLE, "model", 1) < 1:
        raise ValueError(f"model.steps: expected a whole number >= 1, got {model['steps']!r}")
    if "cfg_scale" in model:
        from sa3_engine.generation.request import MAX_CFG_SCALE

        if not 0 <= _field(model, "cfg_scale", NUMBER, "model") <= MAX_CFG_SCALE:
            raise ValueError(f"model.cfg_scale: expected 0 to {MAX_CFG_SCALE:g}, got {model['cfg_scale']!r}")
    master = _field(song, "master", TABLE, "", {})
    _check_fields(master, {"chain", "effects"}, "master")
    arrangement = Arrangement(
        _field(song, "sample_rate", WHOLE, "", _REQUIRED), tempo_map(_field(song, "tempo", TABLE, "", {}), base),
        clips_dir, master=effects(master, "master"), project=project,
    )
    if "length_bars" in song:
        arrangement.song_end = arrangement.bar_to_sample(_bar(song["length_bars"], "length_bars") + 1)
    named: dict[str, Clip] = {}
    for i, spec in enumerate(_field(song, "tracks", LIST, "", [])):
        _add_track(arrangement, spec, f"tracks[{i}]", base, named)
    names = set(named)
    for i, step in enumerate(_field(song, "steps", LIST, "", [])):
        _check_step(arrangement, step, f"steps[{i}]", names)
    return arrangement, named


def run_steps(
    song: dict, arrangement: Arrangement, named: dict[str, Clip], backend: Backend, *, steps: int | None = None,
    progress: ProgressLine | None = None,
) -> None:
    """Run the song's steps in order on `arrangement` (from `arrange`), showing each one's progress;
    `steps` overrides the sampler steps."""
    progress = progress or ProgressLine()
    arrangement.on_progress = progress
    model = song.get("model", {})
    shell = PluginShell(
        arrangement, backend, template=song.get("template", DEFAULT_TEMPLATE), daw=song.get("daw", DEFAULT_DAW),
        steps=steps if steps is not None else model.get("steps"), cfg_scale=model.get("cfg_scale"),
    )
    todo = song.get("steps", [])
    for i, step in enumerate(todo):
        progress.task = f"step {i + 1}/{len(todo)} {step['op']}"
        try:
            result = _run_step(shell, arrangement, step, named)
        except ValueError as error:
            raise ValueError(f"steps[{i}] ({step['op']}): {error}") from None
        at = where(arrangement.tempo_map, result.start, arrangement.sample_rate)
        progress.print(f"steps[{i}] {step['op']}: wrote {result.path} (placed at {at}, sample {result.start})")


def tempo_map(spec: dict, base: Path) -> TempoMap:
    """`{bpm, meter, changes}` or `{midi}`; changes are `{bar, bpm?, meter?}` with 1-based bars."""
    _check_fields(spec, {"bpm", "meter", "changes", "midi"}, "tempo")
    if "midi" in spec:
        if spec.keys() - {"midi"}:
            raise ValueError("tempo: give either midi or bpm/meter/changes, not both")
        path = base / _field(spec, "midi", TEXT, "tempo")
        if not path.is_file():
            raise ValueError(f"tempo.midi: no such file {path}")
        try:
            return TempoMap.from_midi(path)
        except Exception as error:  # mido raises EOFError, OSError, ValueError, KeyError ... on a bad file
            raise ValueError(f"tempo.midi: {path} is not a readable MIDI file "
                             f"({error or type(error).__name__})") from None
    if "bpm" not in spec:
        raise ValueError("tempo.bpm: required (or tempo.midi)")
    meters = [(0, *_meter(spec.get("meter", "4/4"), "tempo.meter"))]
    tempo_bars = [(Fraction(0), _bpm(spec, "tempo"))]
    for i, change in enumerate(_field(spec, "changes", LIST, "tempo", [])):
        where = f"tempo.changes[{i}]"
        _check_fields(change, {"bar", "bpm", "meter"}, where)
        if "bar" not in change or not change.keys() & {"bpm", "meter"}:
            raise ValueError(f"{where}: needs a bar and a bpm and/or a meter")
        bar = _bar(change["bar"], f"{where}.bar")
        if "meter" in change:
            if bar.denominator != 1:
                raise ValueError(f"{where}.bar: a meter change must start a whole bar, got {change['bar']}")
            meters.append((int(bar), *_meter(change["meter"], f"{where}.meter")))
        if "bpm" in change:
            tempo_bars.append((bar, _bpm(change, where)))
    # tempo changes sit at bars, which only the meters turn into quarter notes
    bars = TempoMap.from_lists([(0, 120)], meters)
    return TempoMap.from_lists([(bars.bar_to_quarters(bar), bpm) for bar, bpm in tempo_bars], meters)


def effects(table: dict, where: str) -> list[pedalboard.Plugin]:
    """A track's or the master's `chain = "<chain preset>"` and `effects = [{plugin = "Reverb", ...}]`
    as pedalboard plugins, the chain's first. Only pedalboard's built-in effects are allowed: no
    containers and no VST3/AU hosts, which would load native code named by a song file."""
    plugins = []
    if "chain" in table:
        plugins += list(build_chain(_preset(table, "chain", "chain", where)))
    specs = effect_specs(_field(table, "effects", LIST, where, []), SOURCE, f"{where}.effects")
    return plugins + build_effects(specs, SOURCE, f"{where}.effects")


def _add_track(arrangement: Arrangement, spec, where: str, base: Path, named: dict[str, Clip]) -> None:
    _check_fields(spec, {"name", "gain_db", "chain", "effects", "clips"}, where)
    name = _field(spec, "name", TEXT, where, _REQUIRED)
    arrangement.add_track(name, effects=effects(spec, where), gain_db=_field(spec, "gain_db", NUMBER, where, 0.0))
    rate = arrangement.sample_rate
    for j, clip_spec in enumerate(_field(spec, "clips", LIST, where, [])):
        at = f"{where}.clips[{j}]"
        _check_fields(clip_spec, {"path", "bar", "sample", "gain_db", "fade_in", "fade_out", "name"}, at)
        path = _field(clip_spec, "path", TEXT, at, _REQUIRED)
        if ("bar" in clip_spec) == ("sample" in clip_spec):
            raise ValueError(f"{at}: give its position as bar or as sample, one of them")
        if _field(clip_spec, "sample", WHOLE, at, 0) < 0:
            raise ValueError(f"{at}.sample: must not be negative, got {clip_spec['sample']}")
        fades = {}
        for key in ("fade_in", "fade_out"):
            fades[key] = round(_field(clip_spec, key, NUMBER, at, 0.0) * rate)
            if fades[key] < 0:
                raise ValueError(f"{at}.{key}: must not be negative, got {clip_spec[key]}")
        clip = arrangement.add_clip(
            name, base / path,
            start=clip_spec.get("sample"),
            bar=_bar(clip_spec["bar"], f"{at}.bar") if "bar" in clip_spec else None,
            gain_db=_field(clip_spec, "gain_db", NUMBER, at, 0.0),
            name=_field(clip_spec, "name", TEXT, at, ""),
            **fades,
        )
        try:  # a clip file that cannot be read fails here, before any generation
            arrangement.read_clip(clip)
        except (ValueError, RuntimeError, OSError) as error:
            raise ValueError(f"{at}.path: {error}") from None
        if clip.name:
            if clip.name in named:
                raise ValueError(f"{at}.name: the clip name {clip.name!r} is already used")
            named[clip.name] = clip


def _check_step(arrangement: Arrangement, step, where: str, names: set[str]) -> None:
    """A step's fields, types, track, clip and bars, without running it; `names` gains the name it gives."""
    op = step.get("op") if isinstance(step, dict) else None
    if op not in STEP_FIELDS:
        raise ValueError(f"{where}.op: expected one of {', '.join(STEP_FIELDS)}, got {op!r}")
    _check_fields(step, COMMON_STEP_FIELDS | STEP_FIELDS[op], where)
    track = _field(step, "track", TEXT, where, _REQUIRED)
    if track not in arrangement.tracks:
        raise ValueError(f"{where}.track: no track named {track!r} (have: {', '.join(arrangement.tracks) or 'none'})")
    for key in ("name", "prompt", "negative_prompt", "key"):
        _field(step, key, TEXT, where, None)
    _field(step, "seed", WHOLE, where, None)
    if op == "loop":
        if _field(step, "bars", WHOLE, where, _REQUIRED) < 1:
            raise ValueError(f"{where}.bars: expected a whole number of bars >= 1, got {step['bars']!r}")
        _bar(step.get("bar", 1), f"{where}.bar")
    elif _field(step, "clip", TEXT, where, _REQUIRED) not in names:
        raise ValueError(f"{where}.clip: no clip named {step['clip']!r} (have: {', '.join(sorted(names)) or 'none'})")
    if op == "inpaint":
        bars = step.get("range")
        if not (isinstance(bars, list) and len(bars) == 2):
            raise ValueError(f"{where}.range: expected [start_bar, end_bar], got {bars!r}")
        if _bar(bars[0], f"{where}.range") >= _bar(bars[1], f"{where}.range"):
            raise ValueError(f"{where}.range: the end bar must come after the start bar, got {bars}")
    if op == "variation" and not 0 < _field(step, "init_noise_level", NUMBER, where, 0.7) <= 1:
        raise ValueError(f"{where}.init_noise_level: expected 0 < init_noise_level <= 1, got {step['init_noise_level']!r}")
    if "name" in step:
        if step["name"] in names:
            raise ValueError(f"{where}.name: the clip name {step['name']!r} is already used")
        names.add(step["name"])


def _run_step(shell: PluginShell, arrangement: Arrangement, step: dict, named: dict[str, Clip]) -> Clip:
    """Run one step checked by `_check_step`; returns its result."""
    op, track = step["op"], step["track"]
    common = {k: step[k] for k in ("prompt", "negative_prompt", "key", "seed") if k in step}
    if op == "loop":
        result = shell.generate_loop(track, bars=step["bars"], start_bar=_bar(step.get("bar", 1), "bar"), **common)
    elif op == "inpaint":
        selection = arrangement.select_bars(*(_bar(b, "range") for b in step["range"]))
        result = shell.inpaint(track, named[step["clip"]], selection=selection, **common)
    elif op == "extend":
        result = shell.extend(track, named[step["clip"]], **common)
    else:
        result = shell.variation(track, named[step["clip"]], init_noise_level=step.get("init_noise_level", 0.7), **common)
    if "name" in step:
        result.name = step["name"]
        named[result.name] = result
    return result


def _field(table: dict, key: str, kind: str, where: str, default=_REQUIRED):
    """`table[key]` checked to be of `kind` (NUMBER, WHOLE, TEXT, LIST, TABLE), or `default` when absent."""
    name = f"{where}.{key}" if where else key
    if key not in table:
        if default is _REQUIRED:
            raise ValueError(f"{name}: required")
        return default
    value = table[key]
    if isinstance(value, bool) or not isinstance(value, _TYPES[kind]):
        raise ValueError(f"{name}: expected {kind}, got {value!r}")
    return value


def _preset(table: dict, key: str, kind: str, where: str = ""):
    """The shipped preset of `kind` that `table[key]` names."""
    name = f"{where}.{key}" if where else key
    try:
        return load_preset(kind, _field(table, key, TEXT, where))
    except ValueError as error:
        raise ValueError(f"{name}: {error}") from None


def _bpm(table: dict, where: str) -> float:
    bpm = _field(table, "bpm", NUMBER, where)
    if not bpm > 0:
        raise ValueError(f"{where}.bpm: must be positive, got {bpm!r}")
    return bpm


def _bar(value, where: str) -> Fraction:
    """A 1-based (display) bar number as a 0-based bar position."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 1:
        raise ValueError(f"{where}: expected a bar number >= 1 (bars count from 1), got {value!r}")
    return Fraction(value) - 1


def _meter(text, where: str) -> tuple[int, int]:
    try:
        meter = Meter.parse(text) if isinstance(text, str) else None
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if meter is None:
        raise ValueError(f"{where}: expected a meter like '4/4' or '7/8', got {text!r}")
    return meter.numerator, meter.denominator


def _check_fields(table, allowed: set[str], where: str) -> None:
    if not isinstance(table, dict):
        raise ValueError(f"{where}: expected a table, got {table!r}")
    unknown = sorted(table.keys() - allowed)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(allowed))})")
