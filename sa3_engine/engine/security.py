"""Who may talk to the engine: CurveZMQ for the network, an allow-list of client keys, pairing.

With ``sa3 serve --curve`` both engine sockets are CURVE servers: every connection is encrypted, and a
ZAP handler (pyzmq's ``ThreadAuthenticator``, one thread) admits a client only if its public key is on
the allow-list (``authorized_clients`` in the engine's key folder, like SSH's ``authorized_keys``) or is
the engine's own local key. The allow-list is re-read whenever the file changes, and every request is
checked against it again, so ``sa3 engine keys remove`` takes effect on a running engine.

Two kinds of peers: the **local** key (an ephemeral keypair made at each start, written into the
engine's own user-only connection file) shares the engine's disk; every allow-listed key is **remote**
and must send audio as buffers (``refuse_engine_paths``).

The engine's long-term identity (``engine-identity.json``: its CURVE keypair and the HMAC protocol key,
both stable across restarts so pairings stay valid) is created once, mode 0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import zmq

from bridge import connection, curve
from bridge.protocol import ProtocolError

log = logging.getLogger("sa3.engine")

ZAP_DOMAIN = "sa3"
DEFAULT_PORT = 5570  # requests; events on the next port. Fixed, so pairings survive restarts
IDENTITY_FILE = "engine-identity.json"
ALLOW_FILE = "authorized_clients"
HANDSHAKE_IVL_MS = 10_000  # a connection that has not finished its CURVE handshake by then is dropped
MIN_REMOTE_TOPIC = 16  # remote peers subscribe to their own session, never to every event (the empty topic)
CURVE_COMMAND_BYTES = 1024  # the largest CURVE handshake command, with room for its metadata
WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def engine_keys_dir(folder: str | os.PathLike | None = None) -> Path:
    return connection.private_dir(curve.keys_dir(folder) / "engine")


@dataclass(frozen=True)
class Identity:
    keypair: curve.Keypair
    protocol_key: str  # hex; its ASCII bytes are the HMAC key


def identity(folder: str | os.PathLike | None = None, create: bool = True) -> Identity:
    """The engine's long-term CURVE keypair and protocol key, created once (user-only)."""
    path = engine_keys_dir(folder) / IDENTITY_FILE
    if not path.exists():
        if not create:
            raise FileNotFoundError(f"{path}: no engine identity yet (`sa3 serve --curve` creates it)")
        pair = curve.Keypair.new()
        curve.write_private(path, json.dumps({"public": pair.public, "secret": pair.secret,
                                              "protocol_key": connection.new_key()}, indent=2) + "\n")
    pair = curve.load_keypair(path)
    key = json.loads(curve.read_private(path)).get("protocol_key")
    if not (isinstance(key, str) and len(key) == 64 and all(c in "0123456789abcdef" for c in key)):
        raise ValueError(f"{path}: protocol_key is not 64 lowercase hex digits")
    return Identity(pair, key)


class AllowList:
    """``authorized_clients``: one ``<Z85 public key> <name>`` per line; ``#`` starts a comment."""

    def __init__(self, folder: str | os.PathLike | None = None):
        self.path = engine_keys_dir(folder) / ALLOW_FILE
        self._lock = threading.Lock()  # the ZAP thread and the I/O thread both ask
        self._stamp: tuple | None = None
        self._keys: dict[str, str] = {}

    def entries(self) -> dict[str, str]:
        """key -> name, as the file says now."""
        with self._lock:
            try:
                st = os.stat(self.path)
                stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            if stamp != self._stamp:
                self._keys = self._parse() if stamp else {}
                self._stamp = stamp
            return dict(self._keys)

    def allowed(self, key: str) -> bool:
        return key in self.entries()

    def add(self, key: str, name: str) -> None:
        curve.check_key(key, "client key")
        if not name or any(c.isspace() for c in name):
            raise ValueError(f"name: {name!r} must be a non-empty word (no spaces)")
        keys = self.entries()
        taken = [k for k, n in keys.items() if n == name and k != key]
        if taken:
            raise ValueError(f"name: {name!r} already names key {taken[0]}; remove it first or pick another name")
        keys[key] = name
        self._write(keys)

    def remove(self, key_or_name: str) -> list[str]:
        """Remove the entries with this key or name; the keys removed."""
        keys = self.entries()
        gone = [k for k, n in keys.items() if key_or_name in (k, n)]
        self._write({k: n for k, n in keys.items() if k not in gone})
        return gone

    def _parse(self) -> dict[str, str]:
        keys = {}
        for number, line in enumerate(curve.read_private(self.path).splitlines(), 1):
            key, _, name = line.strip().partition(" ")
            if not key or (key.startswith("#") and len(key) != curve.KEY_CHARS):  # blank, comment
                continue
            try:
                keys[curve.check_key(key)] = name.strip()
            except ValueError as exc:
                log.warning("%s line %d ignored: %s", self.path, number, exc)
        return keys

    def _write(self, keys: dict[str, str]) -> None:
        lines = ["# client public keys allowed to use this engine (sa3 engine keys add/list/remove)"]
        lines += [f"{key} {name}" for key, name in keys.items()]
        curve.write_private(self.path, "\n".join(lines) + "\n")


@dataclass(frozen=True)
class Peer:
    remote: bool
    key: str | None = None


LOCAL = Peer(remote=False)


class Plain:
    """No CURVE (ipc, or tcp on loopback): every peer is local, as before."""

    protocol_key: str | None = None

    def start(self, context: zmq.Context) -> None:
        pass

    def configure(self, sock: zmq.Socket) -> None:
        pass

    def connection_fields(self) -> dict:
        return {}

    def frame_bytes(self, limit: int) -> int:
        """The ZMQ_MAXMSGSIZE for a socket whose messages are at most ``limit`` bytes."""
        return limit

    def peer(self, frames: list) -> Peer | None:
        return LOCAL

    def subscription_allowed(self, frame, topic: bytes) -> bool:
        return True

    def stop(self) -> None:
        pass


class Curve(Plain):
    """CURVE servers, the ZAP handler thread and the per-request check of the allow-list."""

    def __init__(self, keys_dir: str | os.PathLike | None = None):
        self.identity = identity(keys_dir)
        self.protocol_key = self.identity.protocol_key
        self.allow = AllowList(keys_dir)
        self.local = curve.Keypair.new()  # for clients on this machine, through the engine's own connection file
        self._auth = None

    def start(self, context: zmq.Context) -> None:
        """The ZAP handler; before any socket binds, so no handshake happens without it."""
        from zmq.auth.thread import ThreadAuthenticator

        self._auth = ThreadAuthenticator(context, log=logging.getLogger("sa3.engine.zap"))
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        log.info("CURVE: engine key %s; %d client keys allowed (%s)", self.identity.keypair.public,
                 len(self.allow.entries()), self.allow.path)

    def callback(self, domain: str, key: bytes) -> bool:
        """The ZAP handler's question for each new connection: may this client key in?"""
        text = key.decode("ascii", "replace")
        if self._admitted(text) is None:
            log.warning("refused a connection: client key %s is not on the allow-list (%s)", text, self.allow.path)
            return False
        return True

    def configure(self, sock: zmq.Socket) -> None:
        sock.curve_server = True
        sock.curve_secretkey = self.identity.keypair.secret.encode("ascii")
        sock.curve_publickey = self.identity.keypair.public.encode("ascii")
        sock.zap_domain = ZAP_DOMAIN.encode()
        sock.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_IVL_MS)
        curve.network_options(sock)

    def frame_bytes(self, limit: int) -> int:
        """ZMQ_MAXMSGSIZE also bounds the handshake's commands (CURVE's INITIATE: a vouch and metadata)."""
        return max(limit, CURVE_COMMAND_BYTES)

    def connection_fields(self) -> dict:
        return {"curve_serverkey": self.identity.keypair.public, "curve_publickey": self.local.public,
                "curve_secretkey": self.local.secret}

    def peer(self, frames: list) -> Peer | None:
        """Who sent a request (ZAP's User-Id, the client's public key); None if that key is no longer allowed."""
        key = _user_id(frames)
        peer = self._admitted(key)
        if peer is None:
            log.warning("dropped a request from client key %s: no longer on the allow-list", key)
        return peer

    def subscription_allowed(self, frame, topic: bytes) -> bool:
        peer = self._admitted(_user_id([frame]))
        return peer is not None and (not peer.remote or len(topic) >= MIN_REMOTE_TOPIC)

    def _admitted(self, key: str | None) -> Peer | None:
        if key == self.local.public:
            return LOCAL
        if key is not None and self.allow.allowed(key):
            return Peer(remote=True, key=key)
        return None

    def stop(self) -> None:
        if self._auth is not None:
            self._auth.stop()


def guard(curve_on: bool, keys_dir: str | os.PathLike | None = None) -> Plain:
    return Curve(keys_dir) if curve_on else Plain()


def _user_id(frames: list) -> str | None:
    """The User-Id ZAP gave the connection a message came on (its metadata), from any frame that has it."""
    for frame in reversed(frames):
        try:
            return frame.get("User-Id")
        except (zmq.ZMQError, AttributeError):  # made by the socket itself (identities, unsubscriptions)
            continue
    return None


def refuse_engine_paths(content: dict) -> None:
    """A remote peer does not share the engine's disk: audio comes as buffers and results go back as buffers."""
    audio = content.get("audio")
    if isinstance(audio, dict) and "path" in audio:
        raise ProtocolError("bad_request", "content.audio.path: this client is remote (CURVE) and does not share "
                            "the engine's disk; send the audio as a buffer", "content.audio.path")
    if "output_dir" in content:
        raise ProtocolError("bad_request", "content.output_dir: this client is remote (CURVE) and does not share "
                            "the engine's disk; results come back as buffers", "content.output_dir")


def dial_address(ip: str) -> str:
    """The address a client on this machine dials for an engine bound to ``ip`` (wildcards: loopback)."""
    return WILDCARDS.get(ip, ip)


def pair(name: str, client_key: str | None, engine_file: str | os.PathLike, host: str | None = None,
         keys_dir: str | os.PathLike | None = None) -> connection.ConnectionInfo:
    """Allow a client and make its connection file (``remote``). With ``client_key`` (made on the client by
    ``sa3 engine keys client``) the file holds no secret; without, a keypair is made here and its secret
    goes into the file, which then is the whole credential."""
    try:
        info = connection.read(engine_file)
    except FileNotFoundError:
        raise ValueError(f"no running engine: {engine_file} does not exist (start `sa3 serve --curve` first)") from None
    ident = identity(keys_dir, create=False)
    if info.curve_serverkey is None:
        raise ValueError(f"the engine of {engine_file} does not use CURVE; start it with `sa3 serve --curve`")
    if info.curve_serverkey != ident.keypair.public:
        raise ValueError(f"the engine of {engine_file} has another identity than {engine_keys_dir(keys_dir)}; "
                         "pass the --keys-dir it was started with")
    if host is None:
        if info.ip in WILDCARDS:
            raise ValueError(f"the engine listens on every address ({info.ip}): pass --host, the address clients dial")
        host = info.ip
    made = None
    if client_key is None:
        made = curve.Keypair.new()
        client_key = made.public
    AllowList(keys_dir).add(client_key, name)
    dial = f"[{host}]" if ":" in host else host
    endpoints = [f"tcp://{dial}:{endpoint.rsplit(':', 1)[1]}" for endpoint in (info.request_endpoint, info.event_endpoint)]
    return replace(info, ip=host, request_endpoint=endpoints[0], event_endpoint=endpoints[1],
                   curve_publickey=client_key, curve_secretkey=made.secret if made else None, remote=True)

