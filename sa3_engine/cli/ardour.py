"""``sa3 ardour install``: put the SA3 editor actions into Ardour's Lua scripts folder."""

from __future__ import annotations

import argparse
from pathlib import Path

from plugin_shell.ardour.install import default_command, install, scripts_dir


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="ardour_command", required=True, metavar="COMMAND")
    p = sub.add_parser("install", help="copy the SA3 editor actions into Ardour's scripts folder")
    p.add_argument("--scripts-dir", type=Path, help="default: the scripts folder of the newest Ardour here")
    p.add_argument("--model", default="tiny-random", help="the model the actions use (default: %(default)s)")
    p.add_argument("--command", default=None, help="how to run sa3 (default: this Python, as now)")


def run(args: argparse.Namespace) -> int:
    folder = args.scripts_dir or scripts_dir()
    written = install(folder, args.command or default_command(), args.model)
    for path in written:
        print(f"installed {path}")
    print("In Ardour: Edit > Lua Scripts > Script Manager > Action Scripts, add 'SA3: loop here', "
          "'SA3: inpaint range', 'SA3: extend to end' and 'SA3: variation' to buttons or shortcuts.")
    return 0
