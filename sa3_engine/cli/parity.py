"""``sa3 parity DIR...``: check official parity vectors; one line per output tensor, exit 1 on any failure."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from sa3_engine.parity import case_dirs, run_case


def add_arguments(parser, command: str) -> None:
    parser.add_argument("dirs", nargs="+", type=Path, help="a case folder or a folder of case folders")


def run(args) -> int:
    torch.manual_seed(0)
    passed = failed = 0
    for root in args.dirs:
        try:
            paths = case_dirs(root)
        except FileNotFoundError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        for path in paths:
            for row in run_case(path):
                print(row.line(), flush=True)
                passed += row.ok
                failed += not row.ok
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0
