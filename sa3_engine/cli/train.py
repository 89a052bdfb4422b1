"""``sa3 train STAGE ...``: the command-line side of training (argparse lives here, nowhere else).

Stages so far: ``data`` (write the synthetic dataset). Each stage is a subcommand whose work is done
by plain functions elsewhere in ``sa3_engine.training``.
"""

from __future__ import annotations

import argparse
import sys
import time


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    stages = parser.add_subparsers(dest="stage", required=True, metavar="STAGE")
    data = stages.add_parser("data", help="write synthetic clips (WAV + JSON captions/facts) for training",
                             description="Write clips START .. START+COUNT-1 of the seeded synthetic dataset "
                                         "as NNNNNNNN.wav (float32, 44.1 kHz stereo) + NNNNNNNN.json. "
                                         "Existing clips are kept, so an interrupted run resumes.")
    data.add_argument("--out", required=True, help="output folder (created if missing)")
    data.add_argument("--count", type=int, required=True, help="how many clips to write")
    data.add_argument("--seed", type=int, default=0, help="dataset seed (default 0)")
    data.add_argument("--start", type=int, default=0, help="index of the first clip (default 0)")
    data.add_argument("--categories", default=None,
                      help="comma-separated subset of drums,bass,lead,pad,pluck,arp,sfx (default: all)")
    data.add_argument("--quiet", action="store_true", help="no progress line")


def _run_data(args: argparse.Namespace) -> int:
    from sa3_engine.training.synth.dataset import write_dataset

    categories = [c.strip() for c in args.categories.split(",")] if args.categories else None
    began, seconds = time.perf_counter(), 0.0

    def progress(done: int, clip) -> None:
        nonlocal seconds
        seconds += clip.seconds
        if not args.quiet:
            rate = seconds / max(time.perf_counter() - began, 1e-9)
            print(f"\r{done + 1}/{args.count} clips, {seconds:.0f} s of audio, {rate:.0f}x real time",
                  end="", file=sys.stderr, flush=True)

    try:
        out = write_dataset(args.out, args.count, args.seed, start=args.start, categories=categories,
                            progress=progress)
    except ValueError as exc:
        print(f"sa3 train data: {exc}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(file=sys.stderr)
    print(f"wrote {out} (clips {args.start}..{args.start + args.count - 1}, seed {args.seed})")
    return 0


def run(args: argparse.Namespace) -> int:
    return {"data": _run_data}[args.stage](args)
