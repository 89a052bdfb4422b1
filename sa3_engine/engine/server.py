"""The persistent engine process (``sa3 serve``): models stay resident, clients talk protocol v2.

Threads: the I/O thread (the one calling ``Engine.serve``) owns every ZeroMQ socket and all job
state; the worker thread (``jobs.Worker``) runs the pipeline and reports through a queue plus a
wake-up pipe the I/O thread polls. So ping, status and cancel are answered while a job computes.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import queue
import re
import signal
import socket
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path

import zmq

from bridge import connection
from bridge.protocol import (
    DELIMITER,
    MAX_ROUTING_FRAMES,
    PROTOCOL_VERSION,
    SIGNATURE_BYTES,
    Header,
    Limits,
    Message,
    ProtocolError,
    ReplayGuard,
    check_version,
    decode,
    encode,
    error_content,
    pack,
    split_routing,
    unverified_header,
    validate_request,
)
from sa3_engine.engine import security
from sa3_engine.engine.jobs import (
    FINAL_STATES,
    Job,
    JobQueue,
    ModelPool,
    Worker,
    results_too_large,
)
from sa3_engine.engine.leftovers import Leftovers
from sa3_engine.engine.outcomes import JobOutcomes
from sa3_engine.engine.requests import RequestHandlers, Waiter, model_key
from sa3_engine.runtime.device import pick_device, pick_precision, precision_name

log = logging.getLogger("sa3.engine")
# what could end a log line in a viewer (Python's str.splitlines breaks on all of these) or reorder its text
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with control, line-breaking and bidi characters as Python escapes (``\\n``, ``\\u2028``)."""
    return _UNPRINTABLE.sub(lambda m: m[0].encode("unicode_escape").decode("ascii"), text)


class _EscapeArguments(logging.Filter):
    """Engine log messages are constant formats; client text (headers, field names, messages quoting them)
    comes in as arguments, escaped here so an unsigned sender cannot forge log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(printable(a) if isinstance(a, str) else a for a in record.args)
        return True


log.addFilter(_EscapeArguments())

# SIGHUP (terminal closed) and SIGQUIT (Ctrl-\\) too: by default they end the process without cleaning up
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGHUP", "SIGQUIT") if hasattr(signal, name))
STOP_GRACE_S = 30.0  # how long a stopping engine waits for the running job to notice its cancel flag
# routing frames (ZeroMQ identities: at most 255 bytes each) and the delimiter are outside the size limit
ENVELOPE_BYTES = MAX_ROUTING_FRAMES * 255 + len(DELIMITER)
# ZeroMQ holds a whole message before the engine sees any of it and caps frames, not messages: this
# bounds how many whole messages one connection can have waiting (then ZeroMQ stops reading from it)
REQUEST_RCVHWM = 8
MAX_TOPIC_BYTES = 64  # longer subscriptions are ignored (session ids are 32 hex digits)
SUBSCRIPTION_BYTES = 256  # the event socket's ZMQ_MAXMSGSIZE: a subscription is one byte plus its topic


@dataclass
class EngineConfig:
    models: list[str] = field(default_factory=list)  # preloaded; the first is the default model
    models_dir: str | None = None
    device: str | None = None
    dtype: str | None = None
    autoencoder_dtype: str | None = None
    precision: str | None = None  # "fp32", "fast" or None/"auto" (runtime.device.pick_precision)
    compile: bool = False  # torch.compile each loaded model's DiT blocks
    transport: str = connection.DEFAULT_TRANSPORT
    ip: str = "127.0.0.1"
    port: int | None = None  # tcp: requests on it, events on the next one; None: any free ports
    curve: bool = False  # CurveZMQ on both sockets (security.py); needed for a non-loopback ip
    keys_dir: str | None = None  # the engine's identity and allow-list (default: bridge.curve.keys_dir)
    memory_budget_gb: float | None = None
    connection_file: str | None = None
    limits: Limits = field(default_factory=Limits)
    max_batch: int = 8
    retention_s: float = 600.0
    max_retained: int = 64
    retention_bytes: int = 1 << 30  # results' audio kept for refetching, oldest forgotten first
    max_session_jobs: int = 32  # queued jobs of one client session
    max_queued_jobs: int = 256  # queued jobs in all
    max_queued_bytes: int = 1 << 30  # source audio buffers held by queued jobs
    parent_pid: int | None = None  # stop once this process (the one that started the engine) is gone


class UnreadReplies:
    """Audio of replies handed to ZeroMQ and not yet written to the client's connection: a client that does
    not read keeps it queued in the engine. Counted per connection until ZeroMQ lets go of it, and bounded:
    over ``budget`` in all, a connection that still has audio unread gets ``busy`` instead of more (one that
    has none always gets its reply, so a stuck client cannot starve the others)."""

    def __init__(self, budget: int):
        self.budget = budget
        # connection -> (tracker, bytes, when sent)
        self._pending: dict[bytes, list[tuple[zmq.MessageTracker, int, float]]] = {}

    def bytes(self, peer: bytes | None = None) -> int:
        for key in list(self._pending):
            self._pending[key] = [(t, n, sent) for t, n, sent in self._pending[key] if not t.done]
            if not self._pending[key]:
                del self._pending[key]
        peers = self._pending.values() if peer is None else [self._pending.get(peer, [])]
        return sum(n for pending in peers for _, n, _ in pending)

    def refusal(self, peer: bytes, reply: Message) -> dict | None:
        size = sum(memoryview(b).nbytes for b in reply.buffers)
        if not size or self._fits(peer, size):
            return None
        # ZeroMQ reports a frame written a moment after it is (through pyzmq's gc thread): a client that reads
        # may still count for a few ms. Replies sent within the last second get that moment (100 ms in all),
        # once each: a stuck client cannot make the engine wait again and again.
        pending, now = self._pending.get(peer, []), time.monotonic()
        deadline = now + 0.1
        for i, (tracker, n, sent) in enumerate(pending):
            if now - sent < 1.0:
                try:
                    tracker.wait(max(0.0, deadline - time.monotonic()))
                except zmq.NotDone:
                    pass
                pending[i] = (tracker, n, -math.inf)  # waited for once
        if self._fits(peer, size):
            return None
        total, own = self.bytes(), self.bytes(peer)
        refusal = error_content("busy", f"this connection has not read {own} bytes of replies, and the engine holds "
                                f"{total} for clients that have not read them (its --retention-mb: {self.budget}); "
                                "read your replies, then fetch this one with result", "results")
        if "request_id" in reply.content:
            refusal["request_id"] = reply.content["request_id"]
        return refusal

    def _fits(self, peer: bytes, size: int) -> bool:
        return not self.bytes(peer) or self.bytes() + size <= self.budget

    def track(self, peer: bytes, buffers: list) -> list[zmq.Frame]:
        frames = [zmq.Frame(b, copy=False, track=True) for b in buffers]
        size = sum(memoryview(b).nbytes for b in buffers)
        self._pending.setdefault(peer, []).append((zmq.MessageTracker(*frames), size, time.monotonic()))
        return frames


class EngineRunning(RuntimeError):
    """Another live engine already owns the connection file."""


class Engine(RequestHandlers, JobOutcomes):
    """The engine: sockets, the I/O loop and start/stop here; request handlers in ``requests``, job life in
    ``outcomes``."""

    def __init__(self, config: EngineConfig, loader=None):
        if config.transport not in connection.TRANSPORTS:
            raise ValueError(f"transport: {config.transport!r} is not one of {connection.TRANSPORTS}")
        if config.transport == "tcp" and not _is_loopback(config.ip) and not config.curve:
            raise ValueError(f"ip: {config.ip} is not a loopback address; listening on the network needs --curve "
                             "(encrypted, and only allow-listed clients get in)")
        if config.transport == "ipc" and (config.curve or config.ip != EngineConfig.ip or config.port is not None):
            raise ValueError(f"ip: {config.ip} (and --port, --curve) need --transport tcp; ipc sockets are local files")
        config = replace(config, models=[model_key(model) for model in config.models])
        self.config = config
        self.device = pick_device(config.device)
        self.dtype, self.autoencoder_dtype = pick_precision(self.device, config.precision, config.dtype,
                                                            config.autoencoder_dtype)
        self.precision = precision_name(self.dtype, self.autoencoder_dtype)
        budget = None if config.memory_budget_gb is None else int(config.memory_budget_gb * 1e9)
        self.pool = ModelPool(loader or self._load_pipeline, budget)
        self.queue = JobQueue(config.max_batch)
        self.unread = UnreadReplies(config.retention_bytes)
        self.leftovers = Leftovers()  # files to remove on exit, listed in the lock file for the next engine
        self.worker = Worker(self.queue, self.pool, self._emit, self.leftovers)
        self.jobs: dict[str, Job] = {}  # queued, running and retained, by request id
        self.sessions: dict[str, float] = {}  # client session -> last request time
        self.declared: OrderedDict[str, int] = OrderedDict()  # session -> its hello max_message_bytes
        self.session = uuid.uuid4().hex
        self.guard = security.guard(config.curve, config.keys_dir)  # CURVE keys load (or are made) here
        self.key = (self.guard.protocol_key or connection.new_key()).encode("ascii")
        self.replay = ReplayGuard(config.limits.replay_window_s)
        self.connection_path = Path(config.connection_file) if config.connection_file else connection.default_path()
        self.started = time.time()
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._stopping = False
        self._stop_deadline: float | None = None
        self._last_sweep = 0.0
        self._lock_fd: int | None = None

    def _load_pipeline(self, model: str):
        from sa3_engine.generation.pipeline import Pipeline

        # "coreml" is passed through so a model without a fresh export fails instead of quietly running in torch
        device = "coreml" if self.config.device == "coreml" else self.device
        return Pipeline.load(model, models_dir=self.config.models_dir, device=device, dtype=self.dtype,
                             autoencoder_dtype=self.autoencoder_dtype, compile=self.config.compile)

    # --- lifecycle -------------------------------------------------------------------------------

    def serve(self) -> int:
        """Bind, announce through the connection file, answer until stopped; returns the exit code. On the
        main thread, the signals that ask a process to end (STOP_SIGNALS) stop it cleanly."""
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                signal.signal(signum, lambda *_: self.stop())
        try:
            connection.check_folder(self.connection_path.parent)
            self._lock_fd = self._take_lock()
            self.leftovers.take_over(self._lock_fd, self.connection_path)
            self._serve()
        finally:
            if self._lock_fd is not None:  # after the connection file is gone
                os.close(self._lock_fd)
            os.close(self._wake_r)
            os.close(self._wake_w)
        log.info("engine stopped")
        return 0

    def _serve(self) -> None:
        context = zmq.Context()
        self._router = context.socket(zmq.ROUTER)
        self._events = context.socket(zmq.XPUB)
        self._router.setsockopt(zmq.MAXMSGSIZE, self.config.limits.max_message_bytes)  # refused before allocation
        self._router.setsockopt(zmq.RCVHWM, REQUEST_RCVHWM)
        # nobody sends anything else to it (CURVE: its handshake commands must fit too)
        self._events.setsockopt(zmq.MAXMSGSIZE, self.guard.frame_bytes(SUBSCRIPTION_BYTES))
        self._events.setsockopt(zmq.XPUB_MANUAL, 1)  # the engine decides which subscriptions to keep
        for sock in (self._router, self._events):
            sock.setsockopt(zmq.LINGER, 1000)
        endpoints = []
        try:
            self.guard.start(context)  # the ZAP handler, before any handshake
            for sock in (self._router, self._events):
                self.guard.configure(sock)
            info = self._bind()
            endpoints = [info.request_endpoint, info.event_endpoint]
            connection.write(info, self.connection_path)
            log.info("engine %s on %s (events %s), device %s/%s, connection file %s", PROTOCOL_VERSION,
                     info.request_endpoint, info.event_endpoint, self.device, self.dtype, self.connection_path)
            self.worker.start()
            for model in self.config.models:
                self._enqueue(Job(f"preload-{model}", "load", self.session, Header.new("load", self.session), model))
            self._loop()
        finally:
            connection.remove(self.connection_path, os.getpid())
            self._router.close()
            self._events.close()
            self.guard.stop()
            context.term()
            for endpoint in endpoints:
                if endpoint.startswith("ipc://"):
                    Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)
                    self.leftovers.discard(endpoint[len("ipc://"):])

    def stop(self) -> None:
        """Ask the engine to stop; safe from signal handlers and other threads."""
        self._stopping = True
        self._wake()

    def _take_lock(self) -> int | None:
        """The engine lock of the connection file (POSIX), held until exit; EngineRunning if taken."""
        try:
            fd = connection.lock(self.connection_path)
        except connection.Locked:
            raise EngineRunning(f"an engine is already running with {self.connection_path} (it holds "
                                f"{connection.lock_path(self.connection_path)})") from None
        if fd is None:  # no flock (Windows): a connection file naming a live process
            try:
                other = connection.read(self.connection_path)
            except (FileNotFoundError, ValueError):
                return None
            if other.process_alive() is not False:
                raise EngineRunning(f"an engine (pid {other.pid}) is already running with {self.connection_path}")
        return fd

    def _bind(self) -> connection.ConnectionInfo:
        cfg, pid = self.config, os.getpid()
        if cfg.transport == "ipc":
            folder = self.connection_path.parent
            endpoints = [f"ipc://{folder}/sa3-{pid}-{name}.sock" for name in ("requests", "events")]
            for endpoint in endpoints:
                if len(endpoint) - len("ipc://") > 100:  # the OS limit for socket paths is ~104-108 bytes
                    raise ValueError(f"connection_file: {folder} is too long a folder for ipc sockets; use tcp")
            for endpoint in endpoints:  # before they exist: a kill right after binding leaves them listed
                self.leftovers.add(endpoint[len("ipc://"):])
            umask = os.umask(0o177)  # the sockets are 0600 from the start, whatever the folder's mode
            try:
                self._router.bind(endpoints[0])
                self._events.bind(endpoints[1])
            finally:
                os.umask(umask)
        else:
            if ":" in cfg.ip:
                for sock in (self._router, self._events):
                    sock.setsockopt(zmq.IPV6, 1)
            host, dial = (f"[{ip}]" if ":" in ip else ip for ip in (cfg.ip, security.dial_address(cfg.ip)))
            endpoints = []
            for offset, sock in enumerate((self._router, self._events)):
                if cfg.port is None:
                    port = sock.bind_to_random_port(f"tcp://{host}")
                else:
                    port = cfg.port + offset
                    sock.bind(f"tcp://{host}:{port}")
                endpoints.append(f"tcp://{dial}:{port}")
        return connection.ConnectionInfo(cfg.transport, cfg.ip, endpoints[0], endpoints[1], self.key.decode("ascii"),
                                         pid, socket.gethostname(), **self.guard.connection_fields())

    def _loop(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._events, zmq.POLLIN)
        poller.register(self._wake_r, zmq.POLLIN)
        while True:
            ready = dict(poller.poll(50 if self._stopping else 500))
            if self._router in ready:
                for _ in range(64):  # then give the outbox a turn
                    if not self._router.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        break
                    self._on_request(self._receive())
            if self._events in ready:
                for _ in range(64):
                    if not self._events.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                        break
                    self._on_subscription(self._events.recv(copy=False))
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            self._drain_outbox()
            self._sweep()
            parent = self.config.parent_pid
            if parent is not None and not self._stopping and os.getppid() != parent:  # reparented: it died
                log.warning("the process that started the engine (pid %d) is gone: stopping", parent)
                self.stop()
            if self._stopping:
                if self._stop_deadline is None:
                    self._begin_stop()
                worker_done = not self.worker.thread.is_alive() and self._outbox.empty()
                if worker_done or time.monotonic() > self._stop_deadline:
                    return

    def _begin_stop(self) -> None:
        log.info("stopping: refusing new jobs, cancelling queued and running ones")
        connection.remove(self.connection_path, os.getpid())
        for job in self.queue.drain():
            job.audio = None  # out of the worker's reach
        for job in list(self.jobs.values()):
            if job.state not in FINAL_STATES:  # queued, running, or just taken by the worker
                job.cancel.set()
                self._finish_cancelled(job, "the engine is shutting down")
        self.queue.close()
        self._stop_deadline = time.monotonic() + STOP_GRACE_S

    # --- wire ------------------------------------------------------------------------------------

    def _receive(self) -> tuple[list, bool]:
        """All frames of one message, without keeping more than the limits allow; (frames, over limit)."""
        limits = self.config.limits
        max_frames = MAX_ROUTING_FRAMES + 5 + limits.max_buffers
        frames, total, over = [], 0, False
        while True:
            frame = self._router.recv(copy=False)
            total += len(frame)
            # only bounds what is kept in memory; decode applies the limit exactly
            over = over or total > limits.max_message_bytes + ENVELOPE_BYTES or len(frames) >= max_frames
            if not over or len(frames) <= MAX_ROUTING_FRAMES + 2:  # enough to find where to reply
                frames.append(frame)
            if not frame.more:
                return frames, over

    def _send(self, routing: list, msg_type: str, parent: Header | None, content: dict, buffers=()) -> None:
        message = Message(Header.new(msg_type, self.session), parent, content, list(buffers))
        session = parent.session if parent else None
        peer = bytes(routing[0]) if routing else b""
        refusal = self._oversized(message, self._client_limits(session)) or self.unread.refusal(peer, message)
        if refusal is not None:  # its client would drop the connection, or the reply: say so instead
            log.warning("%s to session %s not sent: %s", msg_type, session, refusal["message"])
            message.content, message.buffers = refusal, []
        frames = encode(message, self.key)
        if message.buffers:  # counted until ZeroMQ has written them to the client's connection
            frames[-len(message.buffers):] = self.unread.track(peer, message.buffers)
        self._router.send_multipart([*routing, *frames], copy=False)

    def _client_limits(self, session: str | None) -> Limits:
        """What a client receives in one message: the engine's limits, with the size its hello declared."""
        declared = self.declared.get(session)
        return self.config.limits if declared is None else replace(self.config.limits, max_message_bytes=declared)

    @staticmethod
    def _oversized(reply: Message, limits: Limits) -> dict | None:
        """The ``too_large`` error replacing a reply over its client's limits, or None if it fits."""
        parts = pack(reply)
        try:
            limits.check_parts(parts)
            return None
        except ProtocolError as exc:
            refusal = exc.content()
            if "results" in reply.content and exc.field is None:  # the audio buffers did not fit
                size = SIGNATURE_BYTES + sum(memoryview(p).nbytes for p in parts)
                err = results_too_large(f"the reply would be {size} bytes", limits.max_message_bytes)
                refusal = error_content(err.code, err.message, err.field)
        if "request_id" in reply.content:
            refusal["request_id"] = reply.content["request_id"]
        return refusal

    def _reply(self, waiter: Waiter, content: dict, buffers=()) -> None:
        self._send(waiter.routing, waiter.header.msg_type + "_reply", waiter.header, content, buffers)

    def _publish(self, job: Job, msg_type: str, **content) -> None:
        message = Message(Header.new(msg_type, self.session), job.header, {"request_id": job.request_id, **content})
        self._events.send_multipart([job.session.encode(), *encode(message, self.key)])

    def _on_subscription(self, frame: zmq.Frame) -> None:
        """In manual mode a (un)subscription applies to the connection it came from; a topic over
        MAX_TOPIC_BYTES is never stored, and ZeroMQ drops a closed connection's subscriptions itself.
        With CURVE, remote peers subscribe to their own sessions only (``security``)."""
        data = frame.bytes
        kind, topic = data[:1], data[1:]
        if len(topic) > MAX_TOPIC_BYTES or (kind == b"\x01" and not self.guard.subscription_allowed(frame, topic)):
            return
        if kind == b"\x00":
            self._events.unsubscribe(topic)
        elif kind == b"\x01":  # a new subscriber: tell it events on its topic now reach it
            self._events.subscribe(topic)
            message = Message(Header.new("welcome", self.session), None, {"topic": topic.decode(errors="replace")})
            self._events.send_multipart([topic, *encode(message, self.key)])

    def _on_request(self, received: tuple[list, bool]) -> None:
        frames, over = received
        peer = self.guard.peer(frames)
        if peer is None:  # its key was removed from the allow-list after it connected: no answer
            return
        routing, parts = split_routing(frames)
        header = None
        try:
            if over:
                raise ProtocolError("too_large", f"message over the limits ({self.config.limits})")
            message = decode(parts, self.key, self.config.limits)
            header = message.header
            check_version(header)
            self.replay.check(header)
            content = validate_request(message)
            if peer.remote:
                security.refuse_engine_paths(content)
            self.sessions[header.session] = time.monotonic()
            outcome = self._handle(Waiter(routing, header), message, content)
        except ProtocolError as exc:
            header = header or unverified_header(parts)
            log.warning("refused %s from session %s: %s: %s", header.msg_type if header else "a message",
                        header.session if header else "?", exc.code, exc.message)
            outcome = (exc.content(), [])
        except Exception as exc:  # a bug must cost one reply, never the engine
            log.exception("request failed")
            outcome = (error_content("internal", f"{type(exc).__name__}: {exc}"), [])
        if outcome is not None:
            self._send(routing, f"{header.msg_type}_reply" if header else "error", header, *outcome)

def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False
