"""``sa3 demo``: the main job, a loop generated and placed through the whole stack (``plugin_shell.demo``)."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bridge.client import EngineClient, EngineError
from bridge.spawn import EngineProcess
from bridge.timeline import Meter, TempoMap
from plugin_shell.backends import EngineBackend
from plugin_shell.demo import TINY_WARNING, source_track
from plugin_shell.dsp import seam_discontinuity
from plugin_shell.progress import ProgressLine
from plugin_shell.shell import PluginShell, where
from plugin_shell.testhost import Arrangement
from sa3_engine.audio import unique_path, write_wav
from sa3_engine.cli import options
from sa3_engine.weights.registry import TINY_ID


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", default=TINY_ID, help="model id or folder (default: %(default)s)")
    parser.add_argument("--models-dir", help="folder holding downloaded models")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite source.wav and mix.wav in the output folder")
    parser.add_argument("--bars", type=options.positive_int, default=4, help="loop length in bars (default 4)")
    parser.add_argument("--bpm", type=options.bpm, default=124.0, help="the host's tempo (default 124)")
    parser.add_argument("--meter", type=options.meter, default=Meter(4, 4), help="time signature (default 4/4)")
    parser.add_argument("--sample-rate", type=options.sample_rate, default=48000,
                        help="the host's sample rate in Hz (default 48000)")
    parser.add_argument("--prompt", default="Genre: House, Instruments: drums, bass",
                        help="your words, after the music_loop template's tags (TrackType, BPM, meter)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=options.positive_int, help="sampler steps (default: the model's)")


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    options.resolve_model(args.model, args.models_dir)  # before anything is written: no stray source.wav
    if args.model == TINY_ID:
        print(TINY_WARNING, flush=True)
    rate, out = args.sample_rate, args.out
    tempo_map = TempoMap.constant(args.bpm, args.meter)
    progress = ProgressLine()
    progress.task = f"{args.bars}-bar loop"
    arrangement = Arrangement(rate, tempo_map, out / "clips", on_progress=progress, project="demo")
    out.mkdir(parents=True, exist_ok=True)
    source = write_wav(
        unique_path(out / "source.wav", force=args.force), source_track(tempo_map, args.bars, rate), rate, "float"
    )
    arrangement.add_track("source")
    arrangement.add_clip("source", source, bar=0)
    source_bytes = source.read_bytes()
    arrangement.add_track("sa3 loop")
    arrangement.select_bars(0, args.bars)

    engine_args = ["--models-dir", args.models_dir] if args.models_dir else []
    with tempfile.TemporaryDirectory(prefix="sa3-demo-") as tmp:
        progress.print("starting the engine process ...")
        with EngineProcess(Path(tmp), *engine_args, models=(args.model,), threads=None) as engine:
            with EngineClient(engine.connection_file) as client:
                hello = client.hello()
                device = hello.get("device", {})
                progress.print(f"engine up: protocol {hello.get('protocol_version')}, device {device.get('device')}")
                try:
                    shell = PluginShell(arrangement, EngineBackend(client, args.model), steps=args.steps)
                    clip = shell.generate_loop("sa3 loop", bars=args.bars, prompt=args.prompt, seed=args.seed)
                except EngineError as exc:  # the engine refused: its message, not a traceback
                    progress.end()
                    raise ValueError(f"the engine refused: {exc}") from None

    loop = arrangement.read_clip(clip)
    expected = tempo_map.bar_to_sample(args.bars, rate)
    mix = arrangement.render(unique_path(out / "mix.wav", force=args.force))
    progress.end()
    print()
    print(f"model          {args.model}")
    print(f"loop clip      {clip.path}")
    print(f"  placed at    {where(tempo_map, clip.start, rate)}, sample {clip.start}, on track 'sa3 loop'")
    print(f"  length       {loop.shape[1]} samples = {args.bars} bars at {args.bpm:g} BPM {args.meter}, {rate} Hz "
          f"({'exact' if loop.shape[1] == expected else f'EXPECTED {expected}'})")
    print(f"  seam         discontinuity {seam_discontinuity(loop):.3f} (1.0 = a typical sample step)")
    unchanged = source.read_bytes() == source_bytes
    print(f"source clip    {source} ({'unchanged' if unchanged else 'MODIFIED'})")
    print(f"mixdown        {mix}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0 if loop.shape[1] == expected and unchanged else 1
