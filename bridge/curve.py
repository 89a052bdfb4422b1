"""CurveZMQ for an engine on another machine: key files, the pairing string, client socket options.

CURVE is ZeroMQ's own security mechanism (CurveZMQ: Curve25519 key agreement, per-connection session
keys, authenticated encryption of every frame). Both ends have a long-term keypair; a client must know
the engine's public key, and the engine admits only client public keys on its allow-list (its ZAP
handler, ``sa3_engine.engine.security``). Nothing here does cryptography itself: keys come from
``zmq.curve_keypair`` and the sockets do the rest. Keys are Z85 text, 40 characters for 32 bytes.

Key files are user-only: JSON, mode 0600, in a folder of mode 0700 (``keys_dir``). A client's secret
key stays in its own key folder, never in a connection file made by pairing (unless the pairing step
generated the keypair: ``--new-client-key``), so a stolen connection file alone does not get in.
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

import zmq
from zmq.utils import z85

from bridge import connection
from bridge.connection import private_dir, write_private
from bridge.protocol import PROTOCOL_VERSION, SIGNATURE_SCHEME

KEYS_ENV = "SA3_KEYS_DIR"
KEY_CHARS = 40  # Z85 of 32 bytes
CLIENT_KEY_FILE = "client-key.json"
PAIRING_PREFIX = "sa3-pair1:"
# ZMTP heartbeats and TCP keepalives over a network: a peer silent this long is dropped (ms)
HEARTBEAT_IVL_MS, HEARTBEAT_TIMEOUT_MS = 5_000, 20_000
RECONNECT_IVL_MAX_MS = 5_000  # back off to this between reconnection attempts, not 100 ms forever


def keys_dir(folder: str | os.PathLike | None = None) -> Path:
    """``folder``, else ``$SA3_KEYS_DIR``, else ``$XDG_CONFIG_HOME/sa3`` (``~/.config/sa3``); user-only."""
    if folder is None:
        folder = os.environ.get(KEYS_ENV)
    if folder is None:
        config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
        folder = Path(config, "sa3")
    return private_dir(folder)


def read_private(path: str | os.PathLike) -> str:
    """A key file's text; ValueError if another user owns it or others may read it (POSIX)."""
    path = Path(path)
    with open(path) as f:
        connection.check_private(path, os.fstat(f.fileno()))
        return f.read()


def check_key(value, name: str = "key") -> str:
    """A Z85 CURVE key (40 characters, 32 bytes), else ValueError naming ``name``."""
    if not isinstance(value, str) or len(value) != KEY_CHARS:
        raise ValueError(f"{name}: expected a {KEY_CHARS}-character Z85 CURVE key")
    try:
        if len(z85.decode(value.encode("ascii"))) == 32:
            return value
    except (ValueError, UnicodeEncodeError, KeyError, IndexError):
        pass
    raise ValueError(f"{name}: not a Z85 CURVE key")


@dataclass(frozen=True)
class Keypair:
    public: str
    secret: str

    @classmethod
    def new(cls) -> Keypair:
        public, secret = zmq.curve_keypair()
        return cls(public.decode("ascii"), secret.decode("ascii"))

    @classmethod
    def from_secret(cls, secret: str, name: str = "secret key") -> Keypair:
        check_key(secret, name)
        return cls(zmq.curve_public(secret.encode("ascii")).decode("ascii"), secret)


def load_keypair(path: str | os.PathLike) -> Keypair:
    """A keypair file (``{"public", "secret"}``): user-only, and the public key must match the secret."""
    try:
        data = json.loads(read_private(path))
        pair = Keypair.from_secret(data["secret"], f"{path}: secret")
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{path}: not a keypair file ({exc})") from None
    if pair.public != data.get("public"):
        raise ValueError(f"{path}: its public key does not belong to its secret key")
    return pair


def keypair_file(path: str | os.PathLike, create: bool = True) -> Keypair:
    """The keypair stored at ``path``, created there once if missing (and ``create``)."""
    path = Path(path)
    if not path.exists() and create:
        pair = Keypair.new()
        write_private(path, json.dumps({"public": pair.public, "secret": pair.secret}, indent=2) + "\n")
    return load_keypair(path)


def client_keypair(folder: str | os.PathLike | None = None, create: bool = True) -> Keypair:
    """This machine's client identity (``sa3 engine keys client`` prints its public key)."""
    return keypair_file(keys_dir(folder) / CLIENT_KEY_FILE, create)


def keypair_for(info, folder: str | os.PathLike | None = None) -> Keypair | None:
    """The client keypair a connection file calls for: None without CURVE; its own secret if it carries
    one; else this machine's client key, which must be the one the file was paired for."""
    if info.curve_serverkey is None:
        return None
    check_key(info.curve_serverkey, "curve_serverkey")
    if info.curve_secretkey is not None:
        return Keypair.from_secret(info.curve_secretkey, "curve_secretkey")
    path = keys_dir(folder) / CLIENT_KEY_FILE
    if not path.exists():
        raise ValueError(f"this connection file needs this machine's client key, and {path} does not exist: "
                         "run `sa3 engine keys client` and pair again with its public key")
    pair = load_keypair(path)
    if info.curve_publickey not in (None, pair.public):
        raise ValueError(f"this connection file was paired for client key {info.curve_publickey}, and this "
                         f"machine's key ({path}) is {pair.public}: pair again with `sa3 engine pair --client-key "
                         f"{pair.public}`")
    return pair


def configure_client(sock: zmq.Socket, server_key: str, pair: Keypair, network: bool) -> None:
    """CURVE client options (before connect); ``network``: heartbeats and backoff for a remote engine."""
    sock.curve_serverkey = server_key.encode("ascii")
    sock.curve_publickey = pair.public.encode("ascii")
    sock.curve_secretkey = pair.secret.encode("ascii")
    if network:
        network_options(sock)


def network_options(sock: zmq.Socket) -> None:
    """Dead peers noticed (ZMTP heartbeats, TCP keepalive), reconnections backed off."""
    sock.setsockopt(zmq.HEARTBEAT_IVL, HEARTBEAT_IVL_MS)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, HEARTBEAT_TIMEOUT_MS)
    sock.setsockopt(zmq.TCP_KEEPALIVE, 1)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, RECONNECT_IVL_MAX_MS)


# --- pairing string ------------------------------------------------------------------------------


def pairing_string(info) -> str:
    """What a client needs of a paired connection file, as one shell-safe line: ``sa3-pair1:`` + base64url of
    ``request_endpoint,event port,key,curve_serverkey,curve_publickey[,curve_secretkey]`` (Z85 has no comma)."""
    event_port = info.event_endpoint.rsplit(":", 1)[1]
    fields = [info.request_endpoint, event_port, info.key, info.curve_serverkey, info.curve_publickey]
    fields += [info.curve_secretkey] if info.curve_secretkey else []
    return PAIRING_PREFIX + base64.urlsafe_b64encode(",".join(fields).encode("ascii")).decode("ascii").rstrip("=")


def parse_pairing(text: str) -> dict:
    """The connection file fields of a pairing string (checked by ``connection.from_dict``)."""
    text = text.strip()
    if not text.startswith(PAIRING_PREFIX):
        raise ValueError(f"a pairing string starts with {PAIRING_PREFIX!r}")
    body = text[len(PAIRING_PREFIX):]
    try:
        fields = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii").split(",")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a pairing string: {exc}") from None
    if len(fields) not in (5, 6) or not fields[0].startswith("tcp://") or not fields[1].isdigit():
        raise ValueError("not a pairing string: expected endpoint, event port, key and CURVE keys")
    endpoint, event_port, key, server, public, *secret = fields
    host = endpoint[len("tcp://"):].rsplit(":", 1)[0]
    data = {"transport": "tcp", "ip": host.strip("[]"), "request_endpoint": endpoint,
            "event_endpoint": f"tcp://{host}:{event_port}", "key": key, "pid": 0, "hostname": "",
            "protocol_version": PROTOCOL_VERSION, "signature_scheme": SIGNATURE_SCHEME, "remote": True,
            "curve_serverkey": check_key(server, "engine key"), "curve_publickey": check_key(public, "client key")}
    if secret:
        data["curve_secretkey"] = check_key(secret[0], "client secret key")
    return data
