"""`sa3 render SONG.toml -o mix.wav`: build an arrangement from a song file, run its steps, render it.

A song file is TOML; relative paths are relative to it; unknown fields are refused, naming the
field. Bars count from 1 as a DAW shows them and may be fractional (1.5 = halfway through bar 1):

    sample_rate = 48000            # the host rate
    length_bars = 8                # optional song length; default: the end of the last clip
    template = "{prompt}, {bpm} BPM, {meter} time, {key}"   # optional prompt template

    [model]                        # optional
    id = "tiny-random"             # a model id or folder
    steps = 8
    cfg_scale = 1.0

    [tempo]                        # bpm (+ meter, changes) or midi = "tempo.mid"
    bpm = 120
    meter = "4/4"
    changes = [{ bar = 5, bpm = 96 }, { bar = 7, meter = "7/8" }]

    [master]
    effects = [{ plugin = "Limiter", threshold_db = -1.0 }]   # any pedalboard plugin, by class name

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
    prompt = "warm electric piano"
    key = "A minor"                # optional; negative_prompt and seed too
    seed = 7
    # inpaint: clip = "keys-loop", range = [2, 3] (bars [start, end)); extend: clip = "...";
    # variation: clip = "...", strength = 0.7
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from fractions import Fraction
from pathlib import Path

import pedalboard

from bridge.timeline import Meter, TempoMap
from plugin_shell.host import Clip, Selection
from plugin_shell.shell import DEFAULT_TEMPLATE, Backend, PipelineBackend, PluginShell
from plugin_shell.testhost import Arrangement

STEP_FIELDS = {
    "loop": {"bar", "bars"},
    "inpaint": {"clip", "range"},
    "extend": {"clip"},
    "variation": {"clip", "strength"},
}
COMMON_STEP_FIELDS = {"op", "track", "name", "prompt", "negative_prompt", "key", "seed"}


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("song", type=Path, help="the song file (TOML)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the mixdown WAV to write")
    parser.add_argument("--clips-dir", type=Path, help="where generated clips go (default: next to OUTPUT)")
    parser.add_argument("--bit-depth", choices=["16", "24", "float"], default="24", help="mixdown sample format")
    parser.add_argument("--model", help="override the song's model id or folder")
    parser.add_argument("--models-dir", type=Path, help="where model folders are looked up")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--steps", type=int, help="override the song's sampler steps")


def run(args: argparse.Namespace) -> int:
    clips_dir = args.clips_dir or args.output.parent / f"{args.output.stem}_clips"
    try:
        song = load_song(args.song)
        arrangement, named = arrange(song, args.song.parent, clips_dir)  # every field checked before any model loads
        if song.get("steps"):
            model = args.model or song.get("model", {}).get("id", "tiny-random")
            backend = pipeline_backend(model, models_dir=args.models_dir, device=args.device)
            run_steps(song, arrangement, named, backend, steps=args.steps)
        path = arrangement.render(args.output, bit_depth=args.bit_depth)
    except (ValueError, FileNotFoundError) as error:
        print(f"sa3 render: {error}", file=sys.stderr)
        return 2
    seconds = arrangement.song_end / arrangement.sample_rate
    print(f"wrote {path}: {seconds:.2f} s at {arrangement.sample_rate} Hz; clips in {clips_dir}")
    return 0


def pipeline_backend(model: str, *, models_dir: Path | None = None, device: str | None = None) -> PipelineBackend:
    from sa3_engine.pipeline import Pipeline  # torch is imported only when a song has steps to run

    return PipelineBackend(Pipeline.load(model, models_dir=models_dir, device=device))


def load_song(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{path}: not valid TOML: {error}") from None


def arrange(song: dict, base: Path, clips_dir: Path) -> tuple[Arrangement, dict[str, Clip]]:
    """The arrangement a song describes before its steps run, and its clips by name.

    The steps are checked too (fields, tracks, clip names, bars), so a bad step fails before any
    generation rather than after the ones before it.
    """
    _check_fields(song, {"sample_rate", "length_bars", "template", "model", "tempo", "master", "tracks", "steps"}, "song")
    if "sample_rate" not in song:
        raise ValueError("sample_rate: required (the host rate, e.g. 48000)")
    _check_fields(song.get("model", {}), {"id", "steps", "cfg_scale"}, "model")
    _check_fields(song.get("master", {}), {"effects"}, "master")
    arrangement = Arrangement(
        song["sample_rate"], tempo_map(song.get("tempo", {}), base), clips_dir,
        master=effects(song.get("master", {}).get("effects", []), "master.effects"),
    )
    if "length_bars" in song:
        arrangement.song_end = arrangement.bar_to_sample(_bar(song["length_bars"], "length_bars") + 1)
    named: dict[str, Clip] = {}
    for i, spec in enumerate(song.get("tracks", [])):
        _add_track(arrangement, spec, f"tracks[{i}]", base, named)
    names = set(named)
    for i, step in enumerate(song.get("steps", [])):
        _check_step(arrangement, step, f"steps[{i}]", names)
    return arrangement, named


def run_steps(
    song: dict, arrangement: Arrangement, named: dict[str, Clip], backend: Backend, *, steps: int | None = None
) -> None:
    """Run the song's steps in order on `arrangement` (from `arrange`); `steps` overrides the sampler steps."""
    model = song.get("model", {})
    shell = PluginShell(
        arrangement, backend, template=song.get("template", DEFAULT_TEMPLATE),
        steps=steps if steps is not None else model.get("steps"), cfg_scale=model.get("cfg_scale"),
    )
    for i, step in enumerate(song.get("steps", [])):
        _run_step(shell, arrangement, step, f"steps[{i}]", named)


def tempo_map(spec: dict, base: Path) -> TempoMap:
    """`{bpm, meter, changes}` or `{midi}`; changes are `{bar, bpm?, meter?}` with 1-based bars."""
    _check_fields(spec, {"bpm", "meter", "changes", "midi"}, "tempo")
    if "midi" in spec:
        if spec.keys() - {"midi"}:
            raise ValueError("tempo: give either midi or bpm/meter/changes, not both")
        return TempoMap.from_midi(base / spec["midi"])
    if "bpm" not in spec:
        raise ValueError("tempo.bpm: required (or tempo.midi)")
    meters = [(0, *_meter(spec.get("meter", "4/4"), "tempo.meter"))]
    tempo_bars = [(Fraction(0), spec["bpm"])]
    for i, change in enumerate(spec.get("changes", [])):
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
            tempo_bars.append((bar, change["bpm"]))
    # tempo changes sit at bars, which only the meters turn into quarter notes
    bars = TempoMap.from_lists([(0, 120)], meters)
    return TempoMap.from_lists([(bars.bar_to_quarters(bar), bpm) for bar, bpm in tempo_bars], meters)


def effects(specs: list[dict], where: str) -> list[pedalboard.Plugin]:
    """`[{plugin = "Reverb", room_size = 0.3}, ...]` as pedalboard plugin instances."""
    chain = []
    for i, spec in enumerate(specs):
        name = spec.get("plugin")
        kind = getattr(pedalboard, name, None) if isinstance(name, str) else None
        if not (isinstance(kind, type) and issubclass(kind, pedalboard.Plugin)) or name in ("Plugin", "Pedalboard"):
            raise ValueError(f"{where}[{i}].plugin: not a pedalboard effect: {name!r}")
        try:
            chain.append(kind(**{k: v for k, v in spec.items() if k != "plugin"}))
        except TypeError as error:
            raise ValueError(f"{where}[{i}]: bad parameters for {name}: {error}") from None
    return chain


def _add_track(arrangement: Arrangement, spec: dict, where: str, base: Path, named: dict[str, Clip]) -> None:
    _check_fields(spec, {"name", "gain_db", "effects", "clips"}, where)
    if "name" not in spec:
        raise ValueError(f"{where}.name: required")
    arrangement.add_track(
        spec["name"], effects=effects(spec.get("effects", []), f"{where}.effects"), gain_db=spec.get("gain_db", 0.0)
    )
    rate = arrangement.sample_rate
    for j, clip_spec in enumerate(spec.get("clips", [])):
        at = f"{where}.clips[{j}]"
        _check_fields(clip_spec, {"path", "bar", "sample", "gain_db", "fade_in", "fade_out", "name"}, at)
        if "path" not in clip_spec:
            raise ValueError(f"{at}.path: required")
        clip = arrangement.add_clip(
            spec["name"], base / clip_spec["path"],
            start=clip_spec.get("sample"),
            bar=_bar(clip_spec["bar"], f"{at}.bar") if "bar" in clip_spec else None,
            gain_db=clip_spec.get("gain_db", 0.0),
            fade_in=round(clip_spec.get("fade_in", 0.0) * rate),
            fade_out=round(clip_spec.get("fade_out", 0.0) * rate),
            name=clip_spec.get("name", ""),
        )
        if clip.name:
            if clip.name in named:
                raise ValueError(f"{at}.name: the clip name {clip.name!r} is already used")
            named[clip.name] = clip


def _check_step(arrangement: Arrangement, step, where: str, names: set[str]) -> None:
    """A step's fields, track, clip and bars, without running it; `names` gains the name it gives."""
    op = step.get("op") if isinstance(step, dict) else None
    if op not in STEP_FIELDS:
        raise ValueError(f"{where}.op: expected one of {', '.join(STEP_FIELDS)}, got {op!r}")
    _check_fields(step, COMMON_STEP_FIELDS | STEP_FIELDS[op], where)
    if "track" not in step:
        raise ValueError(f"{where}.track: required")
    arrangement.track(step["track"])
    if op == "loop":
        if isinstance(step.get("bars"), bool) or not isinstance(step.get("bars"), int) or step["bars"] < 1:
            raise ValueError(f"{where}.bars: expected a whole number of bars >= 1, got {step.get('bars')!r}")
        _bar(step.get("bar", 1), f"{where}.bar")
    elif step.get("clip") not in names:
        raise ValueError(f"{where}.clip: no clip named {step.get('clip')!r} (have: {', '.join(sorted(names)) or 'none'})")
    if op == "inpaint":
        bars = step.get("range")
        if not (isinstance(bars, list) and len(bars) == 2):
            raise ValueError(f"{where}.range: expected [start_bar, end_bar], got {bars!r}")
        if _bar(bars[0], f"{where}.range") >= _bar(bars[1], f"{where}.range"):
            raise ValueError(f"{where}.range: the end bar must come after the start bar, got {bars}")
    if "name" in step:
        if step["name"] in names:
            raise ValueError(f"{where}.name: the clip name {step['name']!r} is already used")
        names.add(step["name"])


def _run_step(shell: PluginShell, arrangement: Arrangement, step: dict, where: str, named: dict[str, Clip]) -> None:
    """Run one step checked by `_check_step`."""
    op, track = step["op"], step["track"]
    common = {k: step[k] for k in ("prompt", "negative_prompt", "key", "seed") if k in step}
    if op == "loop":
        result = shell.generate_loop(track, bars=step["bars"], start_bar=_bar(step.get("bar", 1), "bar"), **common)
    elif op == "inpaint":
        start, end = (arrangement.bar_to_sample(_bar(b, "range")) for b in step["range"])
        result = shell.inpaint(track, named[step["clip"]], selection=Selection(start, end), **common)
    elif op == "extend":
        result = shell.extend(track, named[step["clip"]], **common)
    else:
        result = shell.variation(track, named[step["clip"]], strength=step.get("strength", 0.7), **common)
    if "name" in step:
        result.name = step["name"]
        named[result.name] = result
    print(f"{where} {op}: {result.path.name} at sample {result.start}")


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
