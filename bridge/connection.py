"""The connection file: where a running engine listens, the key that signs its messages, its pid.

JSON, mode 0600, in a per-user runtime folder; written atomically by the engine at start-up and
removed when it exits. Clients find the engine through it (``SA3_CONNECTION_FILE`` overrides the path).
On POSIX the engine also holds an exclusive ``flock`` on ``<connection file>.lock`` while it lives:
that lock, not the pid, says whether an engine is running (pids are reused; the kernel releases the
lock of a killed process).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import stat
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bridge.protocol import PROTOCOL_VERSION, SIGNATURE_SCHEME

try:
    import fcntl
except ImportError:  # Windows: no flock; the pid check stands in
    fcntl = None

CONNECTION_ENV = "SA3_CONNECTION_FILE"
TRANSPORTS = ("tcp", "ipc")
# ipc (Unix sockets in the user-only runtime folder) needs no open port; Windows has no such sockets
DEFAULT_TRANSPORT = "ipc" if os.name == "posix" else "tcp"
LOCK_TRIES = 25  # x 20 ms: a client's probe holds the lock (shared) for microseconds


class Locked(RuntimeError):
    """Another process holds the engine lock of this connection file."""


def runtime_dir() -> Path:
    """``$XDG_RUNTIME_DIR/sa3``, else ``~/.local/share/sa3/runtime``; created (or made) user-only."""
    base = os.environ.get("XDG_RUNTIME_DIR")
    return private_dir(Path(base, "sa3") if base else Path.home() / ".local" / "share" / "sa3" / "runtime")


def private_dir(folder: str | os.PathLike) -> Path:
    """``folder`` created with mode 0700 (or set to it), refused (PermissionError) if another user owns it."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        info = os.stat(folder)
        if info.st_uid != os.getuid():
            raise PermissionError(f"{folder}: owned by uid {info.st_uid}, not by this user; refusing to use it")
        if stat.S_IMODE(info.st_mode) != 0o700:  # mkdir's mode does not apply to an existing folder
            os.chmod(folder, 0o700)
    return folder


def check_folder(folder: str | os.PathLike) -> Path:
    """The folder of a connection file the engine writes: created user-only if missing; refused (ValueError)
    if another user owns it or others can write to it (POSIX), since they could replace the files in it."""
    folder = Path(folder)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if os.name == "posix":
        info = os.stat(folder)
        if info.st_uid != os.getuid():
            raise ValueError(f"{folder}: owned by uid {info.st_uid}, not by this user; choose a folder of your own")
        if stat.S_IMODE(info.st_mode) & 0o022:
            raise ValueError(f"{folder}: mode {stat.S_IMODE(info.st_mode):04o}: others can write to it and replace "
                             "the engine's files; choose a folder only you can write to")
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
    # CURVE (bridge.curve): the engine's public key; the client key this file is for; that key's secret,
    # only where the file itself is the credential (the engine's own local file, --new-client-key pairings)
    curve_serverkey: str | None = None
    curve_publickey: str | None = None
    curve_secretkey: str | None = None
    remote: bool = False  # made by pairing: the engine does not share this machine's disk

    @property
    def key_bytes(self) -> bytes:
        return self.key.encode("ascii")

    def process_alive(self) -> bool | None:
        """Whether a process with the engine's pid exists (maybe another one, since pids are reused);
        None when it runs on another host. ``engine_alive`` asks the lock first."""
        if self.hostname != socket.gethostname():
            return None
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # exists, owned by someone else
            return True
        return True


def lock_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


def lock(path: str | os.PathLike) -> int | None:
    """Take the engine lock of the connection file ``path`` for as long as the returned descriptor is
    open (None without flock, on Windows); ``Locked`` if another engine holds it. The lock file stays:
    removing it would let two engines lock two different files of the same name."""
    if fcntl is None:
        return None
    target = lock_path(path)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT, 0o600)
    for _ in range(LOCK_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            time.sleep(0.02)
    os.close(fd)
    raise Locked(f"{target} is locked by a running engine")


def engine_alive(path: str | os.PathLike, info: ConnectionInfo) -> bool | None:
    """Whether the engine that wrote the connection file ``path`` still runs: its lock is held (POSIX,
    same host), else (no lock file, Windows) its pid exists; None when it runs on another host (or the
    file was made by pairing: the engine's lock and pid are on its own machine)."""
    if info.remote or info.hostname != socket.gethostname():
        return None
    if fcntl is not None:
        try:
            fd = os.open(lock_path(path), os.O_RDONLY)
        except FileNotFoundError:  # written by something that never locked: only the pid can tell
            return info.process_alive()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # released at once by closing
            return False
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
    return info.process_alive()


def new_key() -> str:
    return secrets.token_hex(32)


def write(info: ConnectionInfo, path: str | os.PathLike) -> Path:
    """Atomically, created with mode 0600 so the key is never readable by others; optional fields
    (CURVE, ``remote``) only when set."""
    return write_private(path, json.dumps(to_dict(info), indent=2))


def to_dict(info: ConnectionInfo) -> dict:
    """The file's fields: the optional ones (CURVE, ``remote``) only when set."""
    return {name: value for name, value in asdict(info).items() if name not in OPTIONAL or value not in (None, False)}


def write_private(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` atomically to a file created with mode 0600 (its folder created 0700 if missing)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def read(path: str | os.PathLike) -> ConnectionInfo:
    """Parse and check a connection file; FileNotFoundError if absent, ValueError naming a bad field."""
    path = Path(path)
    with open(path, "rb") as f:
        check_private(path, os.fstat(f.fileno()))
        text = f.read()
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    return from_dict(data, str(path))


REQUIRED = {"transport": str, "ip": str, "request_endpoint": str, "event_endpoint": str, "key": str,
            "pid": int, "hostname": str, "protocol_version": str, "signature_scheme": str}
OPTIONAL = {"curve_serverkey": str, "curve_publickey": str, "curve_secretkey": str, "remote": bool}


def from_dict(data, where: str) -> ConnectionInfo:
    """A connection file's fields (``where`` names their source in errors); unknown fields are ignored."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object")
    for name, kind in REQUIRED.items():
        if not isinstance(data.get(name), kind):
            raise ValueError(f"{where}: field {name!r} is missing or not a {kind.__name__}")
    for name, kind in OPTIONAL.items():
        if data.get(name) is not None and not isinstance(data[name], kind):
            raise ValueError(f"{where}: field {name!r} is not a {kind.__name__}")
    if data["signature_scheme"] != SIGNATURE_SCHEME:
        raise ValueError(f"{where}: signature_scheme {data['signature_scheme']!r} is not {SIGNATURE_SCHEME!r}")
    if data["transport"] not in TRANSPORTS:
        raise ValueError(f"{where}: transport {data['transport']!r} is not one of {TRANSPORTS}")
    if (data.get("curve_publickey") or data.get("curve_secretkey")) and not data.get("curve_serverkey"):
        raise ValueError(f"{where}: client CURVE keys without curve_serverkey (the engine's public key)")
    fields = {name: data[name] for name in REQUIRED}
    fields.update({name: data[name] for name in OPTIONAL if data.get(name) is not None})
    return ConnectionInfo(**fields)


def check_private(path: Path, info: os.stat_result) -> None:
    """Its key lets anyone drive the engine: only a file of this user that nobody else can read is trusted."""
    if os.name != "posix":
        return
    if info.st_uid != os.getuid():
        raise ValueError(f"{path}: owned by uid {info.st_uid}, not by this user ({os.getuid()}); refusing it")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o077:
        raise ValueError(f"{path}: mode {mode:04o} lets other users at its key; refusing it (the engine writes 0600)")


def remove(path: str | os.PathLike, pid: int) -> None:
    """Remove the file only while it still names ``pid`` (a newer engine may have replaced it)."""
    path = Path(path)
    try:
        if read(path).pid == pid:
            path.unlink()
    except (FileNotFoundError, ValueError):
        pass
