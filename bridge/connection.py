"""The connection file: where a running engine listens, the key that signs its messages, its pid.

JSON, mode 0600, in a per-user runtime folder; written atomically by the engine at start-up and
removed when it exits. Clients find the engine through it (``SA3_CONNECTION_FILE`` overrides the path).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.protocol import PROTOCOL_VERSION, SIGNATURE_SCHEME

CONNECTION_ENV = "SA3_CONNECTION_FILE"
TRANSPORTS = ("tcp", "ipc")


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/sa3``, else ``~/.local/share/sa3/runtime``; created user-only."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    folder = Path(base, "sa3") if base else Path.home() / ".local" / "share" / "sa3" / "runtime"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    return folder


def default_path() -> Path:
    override = os.environ.get(CONNECTION_ENV)
    return Path(override) if override else runtime_dir() / "engine.json"


@dataclass(frozen=True)
class ConnectionInfo:
    transport: str
    ip: str
    request_endpoint: str  # ROUTER: requests and replies
    event_endpoint: str  # XPUB: events
    key: str  # hex; its ASCII bytes are the HMAC key
    pid: int
    hostname: str
    protocol_version: str = PROTOCOL_VERSION
    signature_scheme: str = SIGNATURE_SCHEME

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    def process_alive(self) -> bool | None:
        """Whether the engine process exists; None when it runs on another host."""
        if self.hostname != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def new_key() -> str:
    return secrets.token_hex(32)


def write(info: ConnectionInfo, path: str | os.PathLike) -> Path:
    """Atomically, created with mode 0600 so the key is never readable by others."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(info), f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read(path: str | os.PathLike) -> ConnectionInfo:
    """Parse and check a connection file; FileNotFoundError if absent, ValueError naming a bad field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object")
    types = {"transport": str, "ip": str, "request_endpoint": str, "event_endpoint": str, "key": str,
             "pid": int, "hostname": str, "protocol_version": str, "signature_scheme": str}
    for name, kind in types.items():
        if not isinstance(data.get(name), kind):
            raise ValueError(f"{path}: field {name!r} is missing or not a {kind.__name__}")
    if data["signature_scheme"] != SIGNATURE_SCHEME:
        raise ValueError(f"{path}: signature_scheme {data['signature_scheme']!r} is not {SIGNATURE_SCHEME!r}")
    if data["transport"] not in TRANSPORTS:
        raise ValueError(f"{path}: transport {data['transport']!r} is not one of {TRANSPORTS}")
    return ConnectionInfo(**{name: data[name] for name in types})


def remove(path: str | os.PathLike, pid: int) -> None:
    """Remove the file only while it still names ``pid`` (a newer engine may have replaced it)."""
    path = Path(path)
    try:
        if read(path).pid == pid:
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass
