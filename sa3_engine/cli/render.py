"""``sa3 render SONG.toml -o MIX.wav``: build an arrangement from a song file, run its steps, render the mix
(the song format: ``plugin_shell.render``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from plugin_shell.progress import ProgressLine
from plugin_shell.render import arrange, load_song, pipeline_backend, run_steps
from sa3_engine.audio import unique_path


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("song", type=Path, help="the song file (TOML)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the mixdown WAV to write")
    parser.add_argument("--force", action="store_true", help="overwrite OUTPUT instead of picking a new name")
    parser.add_argument("--clips-dir", type=Path, help="where generated clips go (default: next to OUTPUT)")
    parser.add_argument("--bit-depth", choices=["16", "24", "float"], default="24", help="mixdown sample format")
    parser.add_argument("--model", help="override the song's model id or folder")
    parser.add_argument("--models-dir", type=Path, help="where model folders are looked up")
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument("--steps", type=int, help="override the song's sampler steps")


def run(args: argparse.Namespace) -> int:
    output = unique_path(args.output, force=args.force)
    clips_dir = args.clips_dir or output.parent / f"{output.stem}_clips"
    progress = ProgressLine()
    try:
        song = load_song(args.song)
        # every field is checked before any model loads
        arrangement, named = arrange(song, args.song.parent, clips_dir, project=args.song.stem)
        if song.get("steps"):
            model = args.model or song.get("model", {}).get("id", "tiny-random")
            progress.print(f"loading model {model} ...")
            backend = pipeline_backend(model, models_dir=args.models_dir, device=args.device)
            run_steps(song, arrangement, named, backend, steps=args.steps, progress=progress)
        path = arrangement.render(output, bit_depth=args.bit_depth)
    except (ValueError, FileNotFoundError) as error:
        progress.end()
        print(f"sa3 render: {error}", file=sys.stderr)
        return 2
    seconds = arrangement.song_end / arrangement.sample_rate
    progress.print(f"wrote {path}: {seconds:.2f} s at {arrangement.sample_rate} Hz; clips in {clips_dir}")
    return 0
