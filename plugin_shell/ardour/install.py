"""`sa3 ardour install`: the SA3 editor actions, copied into the user's Ardour scripts folder.

Each action file is self-contained (Ardour loads one file per action): the shared `sa3_lib.lua` is
inlined where the action says `-- @SA3@`, with the command that runs `sa3` on this machine and the
model to use filled in.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

from plugin_shell.hostbridge.run import sa3_command
from sa3_engine.audio import atomic_path

HERE = Path(__file__).resolve().parent
LIBRARY = HERE / "sa3_lib.lua"
ACTIONS = tuple(sorted((HERE / "actions").glob("sa3_*.lua")))
MARKER = "-- @SA3@"
VERSIONS = (8, 7, 6)  # Ardour versions with Lua editor actions, newest first


def default_command() -> str:
    """How the actions run `sa3`: with this Python, the package importable as it is now."""
    command = shlex.join(sa3_command())
    path = os.environ.get("PYTHONPATH")
    return f"env PYTHONPATH={shlex.quote(path)} {command}" if path else command


def scripts_dir() -> Path:
    """The user's Ardour scripts folder: of the newest Ardour configured (or installed) here."""
    if sys.platform == "darwin":
        folders = {v: Path.home() / "Library" / "Preferences" / f"Ardour{v}" for v in VERSIONS}
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        folders = {v: base / f"ardour{v}" for v in VERSIONS}
    for version in VERSIONS:
        if folders[version].is_dir():
            return folders[version] / "scripts"
    for version in VERSIONS:
        if shutil.which(f"ardour{version}") or shutil.which(f"ardour{version}-lua"):
            return folders[version] / "scripts"
    return folders[VERSIONS[0]] / "scripts"


def render_library(command: str, model: str) -> str:
    """`sa3_lib.lua` with the command and model filled in (Lua string literals)."""
    def literal(text: str) -> str:
        return text.replace("\\", "\\\\").replace('"', '\\"')

    return LIBRARY.read_text().replace("@COMMAND@", literal(command)).replace("@MODEL@", literal(model))


def render_action(action: Path, command: str, model: str) -> str:
    text = action.read_text()
    if text.count(MARKER) != 1:
        raise ValueError(f"{action.name}: expected one '{MARKER}' line where the library goes")
    library = "local SA3 = (function ()\n" + render_library(command, model) + "\nend)()"
    return text.replace(MARKER, library)


def install(folder: Path, command: str, model: str) -> list[Path]:
    """Write every action into `folder` (created); returns the files written."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for action in ACTIONS:
        target = folder / action.name
        with atomic_path(target) as tmp:
            tmp.write_text(render_action(action, command, model))
        written.append(target)
    return written
