"""``EngineClient``: find the running engine through its connection file and call it synchronously.

One client per thread (ZeroMQ sockets are not thread-safe). Calls block until the reply arrives,
calling ``on_progress`` with the engine's events meanwhile. While waiting, the client notices a
dead engine (dropped connection, or silence past ``liveness_s`` despite pings) and raises
``EngineLost``; the next call reconnects by re-reading the connection file. A connection file whose
engine is gone (its lock is free, or nothing accepts the connection within ``reconnect_grace_s``) is
``EngineNotRunning``. A connection that drops and comes back may have lost the request or its reply,
so that counts as lost too. Idempotent calls are retried on a fresh socket (the lazy-pirate pattern);
generation requests are only ever resubmitted with the same request id, which the engine answers with
that one job's outcome.

Remote engines (a connection file made by ``sa3 engine pair``): the sockets are CURVE clients (the
engine's public key from the file, this machine's client key from its key folder, ``bridge.curve``); a
handshake the engine refuses is ``EngineRefused`` at once. Timing defaults suit a network (``NETWORK``), and
since the engine cannot read this machine's files, audio given as a path is read here and sent as a
buffer, and ``output_dir`` is written here from the buffers (``bridge.remote``).

Sizes: ``hello`` (sent once per connection before the first job) declares what this client receives
in one message and learns the engine's limits; a request over them is refused here (``too_large``),
since the engine's socket would drop it without a reply.

Also ``sa3 engine status``: ``add_arguments(parser, command)`` and ``run(args)``.
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zmq
from zmq.utils.monitor import recv_monitor_message

from bridge import connection, curve, remote
from bridge.protocol import (
    Header,
    Limits,
    Message,
    ProtocolError,
    audio_from_buffers,
    audio_to_buffer,
    decode,
    encode,
    error_content,
    split_routing,
    unverified_header,
)
from bridge.results import Generation

ProgressCallback = Callable[[dict], None]


class EngineError(Exception):
    """An error reply from the engine (``code`` is a protocol error code), or a client-side failure."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(f"{code}: {message}")
        self.code, self.message, self.field = code, message, field


class EngineNotRunning(EngineError):
    def __init__(self, path: Path, why: str):
        super().__init__("not_running", f"no engine is running ({why}); connection file: {path}")
        self.path = path


class EngineLost(EngineError):
    def __init__(self, why: str):
        super().__init__("engine_lost", why)


class RequestDropped(EngineLost):
    """The connection dropped and came back while a reply was awaited: ZeroMQ may have lost the
    request (a frame over the engine's size limit is dropped this way) or the reply."""


class EngineRefused(EngineError):
    """The engine refused this client's CURVE handshake (its key is not allowed, or it lacks one)."""

    def __init__(self, why: str):
        super().__init__("refused", why)


# (heartbeat_s, liveness_s, reconnect_grace_s) when not given: on this machine, and over a network
LOCAL, NETWORK = (1.0, 10.0, 1.0), (2.0, 30.0, 10.0)
HANDSHAKE_FAILED = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the engine refused this client's key (not on its allow-list: pair again, "
                                     "`sa3 engine pair`)",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "the security handshake failed (the engine requires CURVE and this "
                                         "connection file has no engine key, or the keys do not match)",
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the security handshake failed",
}


class EngineTimeout(EngineError):
    def __init__(self, what: str):
        super().__init__("timeout", f"no reply to {what} in time")


class EngineClient:
    def __init__(
        self,
        connection_file: str | os.PathLike | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 2,
        heartbeat_s: float | None = None,
        liveness_s: float | None = None,
        reconnect_grace_s: float | None = None,
        limits: Limits | None = None,
        keys_dir: str | os.PathLike | None = None,
    ):
        """``timeout`` bounds the quick calls; jobs and ``result`` wait while the engine lives;
        ``heartbeat_s`` of silence sends a ping, ``liveness_s`` of silence or a connection down for
        ``reconnect_grace_s`` means the engine is gone (defaults: ``LOCAL``, or ``NETWORK`` for a remote
        engine). ``limits``: what this client receives (its ``max_message_bytes`` is declared to the
        engine). ``keys_dir``: this machine's client key for CURVE (default ``bridge.curve.keys_dir``)."""
        self.path = Path(connection_file) if connection_file else connection.default_path()
        self.timeout, self.retries, self.limits = timeout, retries, limits or Limits()
        self._timing = (heartbeat_s, liveness_s, reconnect_grace_s)
        self.heartbeat_s, self.liveness_s, self.reconnect_grace_s = self._timed(False)
        self.keys_dir = keys_dir
        self.session = uuid.uuid4().hex
        self._context = zmq.Context()
        self._dealer = self._sub = self._monitor = None
        self._info: connection.ConnectionInfo | None = None
        self._stamp = None
        self._replies: dict[str, Message] = {}  # by the msg_id they answer
        self._ignored: set[str] = set()  # msg_ids whose replies nobody waits for: pings, abandoned requests
        self._last_ping = 0.0
        self._progress: dict[str, ProgressCallback] = {}
        self._submitted: dict[str, tuple[str, dict, list]] = {}  # request id -> (msg_type, content, buffers)
        self._sent: dict[str, str] = {}  # request id -> msg_id of its latest submission
        self._write_here: dict[str, str] = {}  # request id -> output_dir this client writes (remote engine)

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._disconnect()
        self._context.term()

    # --- calls -----------------------------------------------------------------------------------

    def hello(self) -> dict:
        """The engine's description; also declares this client's ``max_message_bytes`` and learns the
        engine's limits for this connection."""
        content = self._call("hello", {"client": "sa3-bridge",
                                       "max_message_bytes": self.limits.max_message_bytes}).content
        self._engine_limits = Limits.from_dict(content["limits"])
        return content

    def models(self) -> dict:
        return self._call("models", {}).content

    def status(self) -> dict:
        return self._call("status", {}).content

    def ping(self) -> float:
        """Round-trip time in seconds."""
        start = time.perf_counter()
        self._call("ping", {})
        return time.perf_counter() - start

    def load(self, model: str, timeout: float = math.inf) -> dict:
        """Load (or keep) ``model`` resident; waits while the engine lives unless ``timeout`` is given."""
        return self._call("load", {"model": model}, timeout=timeout).content

    def unload(self, model: str, timeout: float = math.inf) -> dict:
        """A job too: it waits for the jobs queued before it."""
        return self._call("unload", {"model": model}, timeout=timeout).content

    def cancel(self, request_id: str) -> dict:
        return self._call("cancel", {"request_id": request_id}).content

    def shutdown(self) -> dict:
        return self._call("shutdown", {}, retry=False).content

    def result(self, request_id: str, wait: bool = True, timeout: float = math.inf) -> list[Generation]:
        """A finished job's results again (``wait`` for one still running, while the engine lives)."""
        reply = self._call("result", {"request_id": request_id, "wait": wait}, timeout=timeout)
        return _results(reply)

    def generate(self, prompt: str = "", **options) -> list[Generation]:
        """Text to audio. Options: model, duration, steps, cfg_scale, seed, negative_prompt, batch_size,
        loras, output_dir, request_id, on_progress, timeout."""
        return self._generation("generate", prompt, None, None, options)

    def inpaint(self, audio, mask_start, mask_end, prompt: str = "", *, sample_rate: int | None = None,
                **options) -> list[Generation]:
        """Regenerate [mask_start, mask_end) seconds (or lists of them) of ``audio`` (an array with
        ``sample_rate``, or an absolute file path the engine reads). Also: duration, splice."""
        return self._generation("inpaint", prompt, audio, sample_rate,
                                dict(options, mask_start=mask_start, mask_end=mask_end))

    def extend(self, audio, duration: float, prompt: str = "", *, sample_rate: int | None = None,
               **options) -> list[Generation]:
        """Continue ``audio`` to ``duration`` seconds in total (the protocol's ``extend``)."""
        return self._generation("extend", prompt, audio, sample_rate, dict(options, duration=duration))

    def variation(self, audio, prompt: str = "", *, sample_rate: int | None = None, **options) -> list[Generation]:
        """Audio-to-audio from ``audio``; also init_noise_level, duration."""
        return self._generation("variation", prompt, audio, sample_rate, options)

    def submit(self, msg_type: str, content: dict, audio=None, sample_rate: int | None = None,
               on_progress: ProgressCallback | None = None) -> str:
        """Send a generation request without waiting; returns its request id (see ``wait``).
        A request over the engine's limits is EngineError ``too_large`` naming the part, before sending."""
        content = {k: v for k, v in content.items() if v is not None}
        request_id = content.setdefault("request_id", uuid.uuid4().hex)
        buffers = []
        self._ensure_connected(events=on_progress is not None)
        if self._info.remote:  # the engine cannot read or write this machine's files: buffers both ways
            if isinstance(audio, (str, os.PathLike)):
                audio, sample_rate = remote.read_audio(audio)
            if "output_dir" in content:
                self._write_here[request_id] = content.pop("output_dir")
        if isinstance(audio, (str, os.PathLike)):
            content["audio"] = {"path": os.path.abspath(audio)}
        elif audio is not None:
            if sample_rate is None:
                raise ValueError("sample_rate: required with audio given as an array")
            content["audio"], buffer = audio_to_buffer(np.asarray(audio), sample_rate, 0)
            buffers.append(buffer)
        self._sent[request_id] = self._send_job(msg_type, content, buffers)
        self._submitted[request_id] = (msg_type, content, buffers)
        if on_progress is not None:
            self._progress[request_id] = on_progress
        return request_id

    def wait(self, request_id: str, timeout: float | None = None) -> list[Generation]:
        """The results of a submitted request. If the engine is replaced by a new one meanwhile, or the
        connection drops and comes back, the request is resubmitted under the same id (at most
        ``retries`` times); if the engine just dies, EngineLost."""
        msg_type, content, buffers = self._submitted[request_id]
        deadline = None if timeout is None else time.monotonic() + timeout
        resubmits, reply = 0, None
        try:
            while True:
                try:
                    reply = self._wait(self._sent[request_id], deadline)
                    while self._sub.poll(0):  # events that came before the reply reach the callback too
                        self._on_event(self._receive(self._sub.recv_multipart(copy=False)))
                    break
                except EngineLost as lost:
                    self._disconnect()
                    if resubmits >= self.retries or not (isinstance(lost, RequestDropped) or self._engine_replaced()):
                        raise
                    resubmits += 1
                    self._ensure_connected(events=request_id in self._progress)
                    self._sent[request_id] = self._send_job(msg_type, content, buffers)
                except EngineTimeout:
                    self._ignored.add(self._send("cancel", {"request_id": request_id}))  # free the engine
                    raise EngineTimeout(f"{msg_type} {request_id} within {timeout:g} s") from None
        finally:
            if reply is None and request_id in self._sent:  # given up on (error, timeout, callback raised)
                self._ignored.add(self._sent[request_id])
            output_dir = self._write_here.get(request_id)
            self._forget(request_id)
        results = _results(_checked(reply))
        return results if output_dir is None else remote.write_results(results, output_dir, request_id)

    def _generation(self, msg_type: str, prompt: str, audio, sample_rate, options: dict) -> list[Generation]:
        on_progress, timeout = options.pop("on_progress", None), options.pop("timeout", None)
        request_id = self.submit(msg_type, {"prompt": prompt, **options}, audio, sample_rate, on_progress)
        return self.wait(request_id, timeout)

    def _forget(self, request_id: str) -> None:
        for table in (self._submitted, self._sent, self._progress, self._write_here):
            table.pop(request_id, None)

    def _call(self, msg_type: str, content: dict, timeout: float | None = None, retry: bool = True) -> Message:
        """Request/reply with the lazy pirate: on silence, a fresh socket and the same request again."""
        timeout = self.timeout if timeout is None else timeout
        retries = self.retries if retry else 0
        while True:
            self._ensure_connected()
            msg_id = self._send(msg_type, content)
            try:
                return _checked(self._wait(msg_id, time.monotonic() + timeout))
            except (EngineLost, EngineTimeout):
                self._disconnect()  # a late reply on the old socket is never mistaken for a new one
                if retries == 0:
                    raise
                retries -= 1

    # --- connection ------------------------------------------------------------------------------

    def _file_stamp(self) -> tuple:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise EngineNotRunning(self.path, "the connection file does not exist") from None
        return st.st_ino, st.st_mtime_ns, st.st_size

    def _ensure_connected(self, events: bool = False) -> None:
        """Sockets to the engine the connection file names now (reconnecting if it changed)."""
        stamp = self._file_stamp()
        if self._dealer is None or stamp != self._stamp:
            self._disconnect()
            self._connect(stamp)
        if events and not self._welcomed:
            self._wait_welcome(time.monotonic() + min(self.timeout, 5.0))

    def _connect(self, stamp: tuple) -> None:
        try:
            info = connection.read(self.path)
        except (FileNotFoundError, ValueError) as exc:
            raise EngineNotRunning(self.path, str(exc)) from None
        if connection.engine_alive(self.path, info) is False:
            raise EngineNotRunning(self.path, f"engine process {info.pid} has exited")
        try:
            keypair = curve.keypair_for(info, self.keys_dir)
        except (OSError, ValueError) as exc:
            raise EngineRefused(f"{self.path}: {exc}") from None
        self.heartbeat_s, self.liveness_s, self.reconnect_grace_s = self._timed(info.remote)
        dealer = self._context.socket(zmq.DEALER)
        sub = self._context.socket(zmq.SUB)
        for sock in (dealer, sub):
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.MAXMSGSIZE, self.limits.max_message_bytes)
            if keypair is not None:
                curve.configure_client(sock, info.curve_serverkey, keypair, network=info.remote)
        # with CURVE, connected means the handshake succeeded (a tcp connection alone proves nothing)
        self._up_event = zmq.EVENT_HANDSHAKE_SUCCEEDED if keypair else zmq.EVENT_CONNECTED
        self._monitor = dealer.get_monitor_socket(
            self._up_event | zmq.EVENT_DISCONNECTED | sum(HANDSHAKE_FAILED), addr=f"inproc://monitor-{uuid.uuid4().hex}")
        dealer.connect(info.request_endpoint)
        sub.setsockopt(zmq.SUBSCRIBE, self.session.encode())
        sub.connect(info.event_endpoint)
        self._dealer, self._sub, self._info, self._stamp = dealer, sub, info, stamp
        self._key = info.key_bytes
        self._welcomed = False
        self._last_heard = self._connecting_since = time.monotonic()
        self._connected = False  # EVENT_CONNECTED seen at least once
        self._down_since: float | None = None
        self._drops = 0  # EVENT_DISCONNECTED seen on this connection
        self._refused: str | None = None  # why the security handshake failed
        self._engine_limits: Limits | None = None  # from hello, once per connection

    def _disconnect(self) -> None:
        if self._dealer is not None:
            self._dealer.disable_monitor()
            for sock in (self._monitor, self._dealer, self._sub):
                sock.close(linger=0)
        self._dealer = self._sub = self._monitor = None
        self._replies.clear()
        self._ignored.clear()

    def _engine_replaced(self) -> bool:
        """Whether the connection file now names a different, live engine."""
        try:
            if self._file_stamp() == self._stamp:
                return False
            return connection.engine_alive(self.path, connection.read(self.path)) is not False
        except (EngineNotRunning, FileNotFoundError, ValueError):
            return False

    # --- wire ------------------------------------------------------------------------------------

    def _send_job(self, msg_type: str, content: dict, buffers: list) -> str:
        """Send a job request, checked against the engine's limits (asking ``hello`` first if not known yet)."""
        if self._engine_limits is None:
            self.hello()
        return self._send(msg_type, content, buffers)

    def _send(self, msg_type: str, content: dict, buffers=()) -> str:
        header = Header.new(msg_type, self.session)
        try:
            frames = encode(Message(header, None, content, list(buffers)), self._key, self._engine_limits)
        except ProtocolError as exc:  # the engine would refuse it, or drop the connection without a reply
            raise _too_large(msg_type, exc, bool(buffers)) from None
        self._dealer.send_multipart(frames, copy=False)
        return header.msg_id

    def _wait(self, msg_id: str, deadline: float | None) -> Message:
        drops = self._drops
        while msg_id not in self._replies:
            if self._drops != drops and self._down_since is None:
                raise RequestDropped(f"the connection to the engine (pid {self._info.pid}) dropped and came back "
                                     f"while waiting for the reply to {msg_id}: the request or its reply may be lost")
            self._poll_once(deadline, f"request {msg_id}")
        return self._replies.pop(msg_id)

    def _wait_welcome(self, deadline: float) -> None:
        """Until the event subscription is live, so no early event of the next request is lost."""
        try:
            while not self._welcomed:
                self._poll_once(deadline, "the event subscription")
        except EngineTimeout:
            pass  # events are progress only; the reply still comes on the request socket

    def _poll_once(self, deadline: float | None, what: str) -> None:
        self._read_monitor()  # first: events may have waited since the last call
        if self._refused is not None:
            why = f"{self._refused}; engine {self._info.request_endpoint}, connection file {self.path}"
            self._disconnect()
            raise EngineRefused(why)
        now = time.monotonic()
        if deadline is not None and now > deadline:
            raise EngineTimeout(what)
        if not self._connected and now - self._connecting_since > self.reconnect_grace_s:
            raise EngineNotRunning(self.path, f"nothing accepts connections at {self._info.request_endpoint} "
                                   f"(waited {self.reconnect_grace_s:g} s)")
        if self._down_since is not None:
            if now - self._down_since > self.reconnect_grace_s:
                raise EngineLost(f"the connection to the engine (pid {self._info.pid}) dropped")
            if self._engine_replaced():
                raise EngineLost(f"the engine (pid {self._info.pid}) was replaced by another")
        if now - self._last_heard > self.liveness_s:
            raise EngineLost(f"no sign of life from the engine (pid {self._info.pid}) for {self.liveness_s:g} s")
        if now - self._last_heard > self.heartbeat_s and now - self._last_ping > self.heartbeat_s:
            self._ignored.add(self._send("ping", {}))
            self._last_ping = now
        poller = zmq.Poller()
        for sock in (self._dealer, self._sub, self._monitor):
            poller.register(sock, zmq.POLLIN)
        ready = dict(poller.poll(100))
        if self._monitor in ready:
            self._read_monitor()
        if self._dealer in ready:
            reply = self._receive(self._dealer.recv_multipart(copy=False))
            if reply is not None and reply.parent_header is not None:
                answered = reply.parent_header.msg_id
                if answered in self._ignored:
                    self._ignored.discard(answered)
                else:
                    self._replies[answered] = reply
        if self._sub in ready:
            self._on_event(self._receive(self._sub.recv_multipart(copy=False)))

    def _timed(self, network: bool) -> tuple[float, float, float]:
        return tuple(given if given is not None else default
                     for given, default in zip(self._timing, NETWORK if network else LOCAL, strict=True))

    def _read_monitor(self) -> None:
        while self._monitor.poll(0):
            event = recv_monitor_message(self._monitor)["event"]
            if event == zmq.EVENT_DISCONNECTED:
                self._down_since, self._drops = time.monotonic(), self._drops + 1
            elif event in HANDSHAKE_FAILED:
                self._refused = HANDSHAKE_FAILED[event]
            elif event == self._up_event:
                self._down_since, self._connected = None, True

    def _receive(self, frames: list) -> Message | None:
        _, parts = split_routing(frames)
        try:
            message = decode(parts, self._key, self.limits)
        except ProtocolError as exc:
            # a reply to us that cannot be read (over our limits, corrupted) still ends the wait for it
            parent = unverified_header(parts, "parent_header")
            if parent is None or parent.session != self.session:
                return None  # not an answer to anything of ours: nothing to act on
            content = error_content(exc.code, f"the engine's reply could not be read: {exc.message}", exc.field)
            return Message(Header.new("error", self.session), parent, content)
        self._last_heard = time.monotonic()
        return message

    def _on_event(self, event: Message | None) -> None:
        if event is None:
            return
        if event.msg_type == "welcome":
            self._welcomed = self._welcomed or event.content.get("topic") == self.session
            return
        callback = self._progress.get(event.content.get("request_id"))
        if callback is not None:
            callback({"event": event.msg_type, **event.content})


def _too_large(msg_type: str, exc: ProtocolError, has_audio: bool) -> EngineError:
    """A request over the engine's limits (from hello); the one buffer a client sends is the audio."""
    if exc.field is None and has_audio:
        return EngineError("too_large", f"{msg_type}: content.audio: {exc.message} (the engine's limit); send the "
                           "audio as a file path the engine can read, or less of it", "content.audio")
    return EngineError("too_large", f"{msg_type}: {exc.message} (the engine's limits)", exc.field)


def _checked(reply: Message) -> Message:
    if reply.content.get("status") != "ok":
        content = reply.content
        raise EngineError(content.get("code", "internal"), content.get("message", "error reply"), content.get("field"))
    return reply


def _results(reply: Message) -> list[Generation]:
    results = []
    for entry in reply.content["results"]:
        audio_map = entry["audio"]
        if "path" in audio_map:
            audio, rate, path = None, audio_map["sample_rate"], audio_map["path"]
        else:
            rate, view = audio_from_buffers(audio_map, reply.buffers)
            audio, path = view.copy(), None  # owned and writable, not a view of a socket frame
        results.append(Generation(audio, rate, entry["seed"], entry["params"], entry["timings"], path))
    return results
