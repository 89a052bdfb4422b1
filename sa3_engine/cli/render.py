"""``sa3 render SONG.toml -o MIX.wav``: build an arrangement from a song file, run its steps, render the mix
(the song format: docs/song-format.md, ``plugin_shell.render``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from plugin_shell.progress import ProgressLine
from plugin_shell.render import (
    SONG_FORMAT,
    arrange,
    dry_run,
    load_song,
    pipeline_backend,
    run_steps,
    write_mix,
)
from sa3_engine.audio import BIT_DEPTHS, unique_path
from sa3_engine.cli import options

SIDECAR = ".json"


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.description = (
        "Build an arrangement from a song file, run its steps (new loops, inpaints, extensions, variations)\n"
        "and render the mixdown, with a JSON sidecar beside it. Every step is checked before any model\n"
        "loads. The song format (docs/song-format.md), by example:\n\n" + SONG_FORMAT
    )
    parser.add_argument("song", type=Path, help="the song file (TOML)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the mixdown WAV to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT instead of picking a new name")
    parser.add_argument("--clips-dir", type=Path, help="where generated clips go (default: next to OUTPUT)")
    parser.add_argument("--bit-depth", choices=tuple(BIT_DEPTHS), default="24", help="mixdown sample format")
    parser.add_argument("--model", help="override the song's model id or folder")
    parser.add_argument("--models-dir", type=Path, help="where model folders are looked up")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--steps", type=options.positive_int, help="override the song's sampler steps")


def run(args: argparse.Namespace) -> int:
    if args.output.suffix.lower() != ".wav":
        raise ValueError(f"--output: {args.output} must end in .wav")
    output = unique_path(args.output, force=args.force, sidecars=(SIDECAR,))
    clips_dir = args.clips_dir or output.parent / f"{output.stem}_clips"
    progress = ProgressLine()
    song = load_song(args.song)
    # every field is checked, and every step run against silence, before any model loads
    arrangement, named = arrange(song, args.song.parent, clips_dir, project=args.song.stem)
    model = None
    if song.get("steps"):
        model = args.model or song.get("model", {}).get("id", "tiny-random")
        config = json.loads(options.resolve_model(model, args.models_dir).config.read_text())
        dry_run(song, args.song.parent, config["sample_rate"], config["sample_size"] / config["sample_rate"])
        progress.print(f"loading model {model} ...")
        backend = pipeline_backend(model, models_dir=args.models_dir, device=args.device)
        run_steps(song, arrangement, named, backend, steps=args.steps, progress=progress)
    path, warnings = write_mix(arrangement, output, bit_depth=args.bit_depth, song=args.song, model=model)
    progress.end()
    for warning in warnings:
        print(f"sa3 render: warning: {warning}", file=sys.stderr)
    seconds = arrangement.song_end / arrangement.sample_rate
    progress.print(f"wrote {path}: {seconds:.2f} s at {arrangement.sample_rate} Hz, sidecar "
                   f"{path.with_suffix(SIDECAR).name}; clips in {clips_dir}")
    return 0
