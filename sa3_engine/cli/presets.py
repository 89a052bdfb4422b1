"""``sa3 presets [KIND]``: list DAW presets, prompt templates and render chains."""

from __future__ import annotations

from daw_presets import FOLDERS, run_presets_cli


def add_arguments(parser, command: str) -> None:
    parser.add_argument("kind", nargs="?", choices=sorted(FOLDERS), help="only this kind of preset")


def run(args) -> int:
    print(run_presets_cli(args.kind))
    return 0
