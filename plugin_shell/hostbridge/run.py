"""Running a host bridge request: engine, shell, reply. Also `sa3 host REQUEST.json`.

Output of `sa3 host`: JSON lines on stdout, `{"event": "progress", ...}` while it runs and one
`{"event": "reply", ...}` at the end (also written atomically to `--reply FILE`, as JSON, or as a Lua
table when the file name ends in `.lua`, for hosts without a JSON parser). Exit status 0 when placed,
1 on an error, 3 when cancelled (SIGINT/SIGTERM, or the request's cancel file appeared).
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from bridge.client import EngineClient, EngineError, EngineNotRunning
from bridge.connection import default_path, runtime_dir
from bridge.spawn import EngineProcess
from plugin_shell.backends import EngineBackend
from plugin_shell.shell import Cancelled, PluginShell
from sa3_engine.audio import atomic_path

from .host import BridgeHost
from .request import SCHEMA_VERSION, VERSION_KEY, Engine, Request, RequestError, parse

RELATIONS = {"loop": "new", "inpaint": "take", "variation": "take", "extend": "continuation"}
# `sa3` as this Python runs it, whether or not the `sa3` script is on PATH
SA3_MAIN = "import sys; from sa3_engine.cli import main; sys.exit(main())"


def sa3_command() -> list[str]:
    """The argv that runs `sa3` with this interpreter (append the subcommand and its arguments)."""
    return [sys.executable, "-c", SA3_MAIN]


@contextlib.contextmanager
def engine_backend(engine: Engine, say: Callable[[str], None]) -> Iterator[EngineBackend]:
    """A backend on the running engine (its connection file, or this user's default one); when none runs
    and `engine.start`, one is started and left running for the next request (it is `sa3 serve`)."""
    path = engine.connection_file or default_path()
    client = EngineClient(path)
    try:
        try:
            client.hello()
        except EngineNotRunning:
            if not engine.start:
                raise
            say(f"starting the engine ({engine.model}); it keeps running for the next request")
            folder = Path(path).parent if engine.connection_file else runtime_dir()
            args = ["--models-dir", str(engine.models_dir)] if engine.models_dir else []
            EngineProcess(folder, *args, models=(engine.model,), connection_file=path, threads=None,
                          exit_with_parent=False).start()
            client.close()
            client = EngineClient(path)
        yield EngineBackend(client, engine.model)
    finally:
        client.close()


def run_shell(request: Request, host: BridgeHost, backend) -> None:
    """The request's action through `PluginShell`; what it placed is in `host.placed`."""
    shell = PluginShell(host, backend, template=request.preset, daw=request.daw, steps=request.steps,
                        cfg_scale=request.cfg_scale, warp=request.warp)
    options = {"prompt": request.prompt, "key": request.key, "negative_prompt": request.negative_prompt,
               "seed": request.seed}
    track, clip = request.track, host.source
    if request.action == "loop":
        shell.generate_loop(track, bars=request.bars, **options)
    elif request.action == "inpaint":
        shell.inpaint(track, clip, **options)
    elif request.action == "extend":
        shell.extend(track, clip, **options)
    else:
        shell.variation(track, clip, init_noise_level=request.init_noise_level, **options)


def reply_for(request: Request, host: BridgeHost) -> dict:
    """What to place, from what the shell placed: exact sample positions and lengths at the host rate."""
    results = []
    for placed in host.placed:
        sidecar = placed.clip.path.with_suffix(".json")
        meta = json.loads(sidecar.read_text())
        results.append({
            "path": str(placed.clip.path), "sidecar": str(sidecar), "track": placed.track, "name": placed.clip.name,
            "position": placed.clip.start, "length": meta["length"], "offset": 0,
            "relation": RELATIONS[request.action], "placement": placed.placement,
            "source": None if request.clip is None else {
                "path": str(request.clip.path), "position": request.clip.position, "length": request.clip.length,
                "offset": request.clip.offset,
            },
            "start_bar": meta["start_bar"], "end_bar": meta["end_bar"], "seed": meta["seed"],
            "warp": meta.get("warp"),
        })
    return {VERSION_KEY: SCHEMA_VERSION, "ok": True, "action": request.action, "sample_rate": request.sample_rate,
            "results": results}


def error_reply(field: str | None, message: str, *, code: str = "invalid", cancelled: bool = False) -> dict:
    return {VERSION_KEY: SCHEMA_VERSION, "ok": False, "cancelled": cancelled,
            "error": {"code": code, "field": field, "message": message}}


def handle(data, *, emit: Callable[[dict], None] = lambda event: None,
           on_host: Callable[[BridgeHost], None] = lambda host: None) -> dict:
    """One request (parsed JSON) to its reply; never raises for a bad request or a failed generation.

    `emit` receives progress and status events; `on_host` the host once it exists (to cancel it)."""
    try:
        request = parse(data)
        request.output_dir.mkdir(parents=True, exist_ok=True)
        host = BridgeHost(request, on_progress=lambda e: emit({"event": "progress", **e}))
        on_host(host)
        say = lambda text: emit({"event": "status", "message": text})  # noqa: E731
        with engine_backend(request.engine, say) as backend:
            run_shell(request, host, backend)
        return reply_for(request, host)
    except RequestError as error:
        return error_reply(error.field, str(error))
    except Cancelled:
        return error_reply(None, "cancelled by the host; nothing was placed", code="cancelled", cancelled=True)
    except EngineError as error:
        return error_reply(error.field, f"engine: {error.message}", code=f"engine_{error.code}")
    except (ValueError, FileNotFoundError) as error:
        text = str(error)
        field = text.split(":", 1)[0] if ":" in text and " " not in text.split(":", 1)[0] else None
        return error_reply(field, text)


# -- replies for Lua -------------------------------------------------------------------------------


def to_lua(value) -> str:
    """`value` (JSON types) as a Lua table constructor, for hosts that `load("return " .. text)`."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "0/0"
    if isinstance(value, str):
        return '"' + "".join(_lua_char(c) for c in value) + '"'
    if isinstance(value, (list, tuple)):
        return "{" + ", ".join(to_lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{to_lua(str(k))}] = {to_lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def _lua_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    if c.isprintable() and c != "\n":
        return c
    return "".join(f"\\{b}" for b in c.encode())  # decimal escapes: bytes, as Lua strings are


def write_reply(path: Path, reply: dict) -> None:
    text = ("return " + to_lua(reply)) if path.suffix == ".lua" else json.dumps(reply, indent=2)
    with atomic_path(path) as tmp:
        tmp.write_text(text + "\n")
