"""``sa3 demo``: the main job. A loop generated and placed through the whole stack.

engine process (``sa3 serve``) <- protocol v1 <- ``EngineClient`` <- ``PluginShell`` <- offline host:
an arrangement with a source track at the host's tempo and rate gets a new track holding an
N-bar seamless loop from the engine; the arrangement is then rendered to a mixdown. Files already in
the output folder are never overwritten unless ``--force``: new ones get the next free name.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bridge.client import EngineClient
from bridge.spawn import EngineProcess
from bridge.timeline import Meter, TempoMap
from sa3_engine.audio import unique_path, write_wav
from sa3_engine.models import TINY_ID

from .backends import EngineBackend
from .dsp import seam_discontinuity
from .progress import ProgressLine
from .shell import PluginShell
from .testhost import Arrangement

TINY_WARNING = (
    "NOTE: no trained default model ships yet, so this demo runs on 'tiny-random', a tiny model with\n"
    "      RANDOM weights. Every part of the stack is real, but the audio is noise-like, not music.\n"
    "      With released weights on disk, run: sa3 demo --model small-music"
)


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", default=TINY_ID, help="model id or folder (default: %(default)s)")
    parser.add_argument("--models-dir", help="folder holding downloaded models")
    parser.add_argument("-o", "--out", type=Path, default=Path("out/demo"), help="output folder (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="overwrite source.wav and mix.wav in the output folder")
    parser.add_argument("--bars", type=int, default=4)
    parser.add_argument("--bpm", type=float, default=124.0)
    parser.add_argument("--meter", default="4/4")
    parser.add_argument("--sample-rate", type=int, default=48000, help="the host's sample rate")
    parser.add_argument("--prompt", default="Genre: House, Instruments: drums, bass",
                        help="your words, after the music_loop template's tags (TrackType, BPM, meter)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--steps", type=int, help="sampler steps (default: the model's)")


def source_track(tempo_map: TempoMap, bars: int, rate: int) -> np.ndarray:
    """A stand-in for the producer's own track: a decaying 55 Hz pulse on every beat."""
    end = tempo_map.bar_to_sample(bars, rate)
    audio = np.zeros((2, end), np.float32)
    meter = tempo_map.meter_at(0)
    for beat in range(bars * meter.numerator):
        start = tempo_map.bar_to_sample(beat / meter.numerator, rate)
        n = min(end - start, rate // 4)
        t = np.arange(n) / rate
        audio[:, start : start + n] += (0.5 * np.sin(2 * np.pi * 55 * t) * np.exp(-t * 12)).astype(np.float32)
    return audio


def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    if args.model == TINY_ID:
        print(TINY_WARNING, flush=True)
    rate, out = args.sample_rate, args.out
    tempo_map = TempoMap.constant(args.bpm, Meter.parse(args.meter))
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
                shell = PluginShell(arrangement, EngineBackend(client, args.model), steps=args.steps)
                clip = shell.generate_loop("sa3 loop", bars=args.bars, prompt=args.prompt, seed=args.seed)

    loop = arrangement.read_clip(clip)
    expected = tempo_map.bar_to_sample(args.bars, rate)
    mix = arrangement.render(unique_path(out / "mix.wav", force=args.force))
    progress.end()
    print()
    print(f"model          {args.model}")
    print(f"loop clip      {clip.path}")
    print(f"  placed at    sample {clip.start} on track 'sa3 loop' (bar 1)")
    print(f"  length       {loop.shape[1]} samples = {args.bars} bars at {args.bpm:g} BPM {args.meter}, {rate} Hz "
          f"({'exact' if loop.shape[1] == expected else f'EXPECTED {expected}'})")
    print(f"  seam         discontinuity {seam_discontinuity(loop):.3f} (1.0 = a typical sample step)")
    unchanged = source.read_bytes() == source_bytes
    print(f"source clip    {source} ({'unchanged' if unchanged else 'MODIFIED'})")
    print(f"mixdown        {mix}")
    print(f"done in {time.monotonic() - started:.1f} s")
    return 0 if loop.shape[1] == expected and unchanged else 1

