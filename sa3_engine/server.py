"""The persistent engine process (``sa3 serve``): models stay resident, clients talk protocol v1.

Threads: the I/O thread (the one calling ``Engine.serve``) owns every ZeroMQ socket and all job
state; the worker thread (``jobs.Worker``) runs the pipeline and reports through a queue plus a
wake-up pipe the I/O thread polls. So ping, status and cancel are answered while a job computes.
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import queue
import signal
import socket
import sys
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import zmq

from bridge import connection
from bridge.protocol import (
    DELIMITER,
    EVENT_TYPES,
    GENERATION_TYPES,
    MAX_ROUTING_FRAMES,
    PROTOCOL_VERSION,
    REQUESTS,
    SIGNATURE_BYTES,
    Header,
    Limits,
    Message,
    ProtocolError,
    ReplayGuard,
    audio_from_buffers,
    check_version,
    decode,
    encode,
    error_content,
    pack,
    split_routing,
    unverified_header,
    validate_request,
)
from sa3_engine.device import coreml_export, describe, pick_autoencoder_dtype, pick_device, pick_dtype
from sa3_engine.jobs import FINAL_STATES, MODEL_KINDS, Job, JobQueue, ModelPool, Worker, results_too_large
from sa3_engine.models import MODELS, TINY_ID, resolve

log = logging.getLogger("sa3.engine")

STOP_GRACE_S = 30.0  # how long a stopping engine waits for the running job to notice its cancel flag
SESSION_ACTIVE_S = 60.0
DECLARED_SESSIONS = 10_000  # hello max_message_bytes declarations kept, most recent first
# routing frames (ZeroMQ identities: at most 255 bytes each) and the delimiter are outside the size limit
ENVELOPE_BYTES = MAX_ROUTING_FRAMES * 255 + len(DELIMITER)
# ZeroMQ holds a whole message before the engine sees any of it and caps frames, not messages: this
# bounds how many whole messages one connection can have waiting (then ZeroMQ stops reading from it)
REQUEST_RCVHWM = 8
MAX_TOPIC_BYTES = 64  # longer subscriptions are ignored (session ids are 32 hex digits)
SUBSCRIPTION_BYTES = 256  # the event socket's ZMQ_MAXMSGSIZE: a subscription is one byte plus its topic
QUEUED_WINDOW = 8  # queued events are published for the first positions only


@dataclass
class EngineConfig:
    models: list[str] = field(default_factory=list)  # preloaded; the first is the default model
    models_dir: str | None = None
    device: str | None = None
    dtype: str | None = None
    autoencoder_dtype: str | None = None
    transport: str = connection.DEFAULT_TRANSPORT
    ip: str = "127.0.0.1"
    allow_remote: bool = False
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


class EngineRunning(RuntimeError):
    """Another live engine already owns the connection file."""


@dataclass
class Waiter:
    """A request waiting for a job's outcome: where to send the reply and what it answers."""

    routing: list
    header: Header


class Engine:
    def __init__(self, config: EngineConfig, loader=None):
        if config.transport not in connection.TRANSPORTS:
            raise ValueError(f"transport: {config.transport!r} is not one of {connection.TRANSPORTS}")
        if config.transport == "tcp" and not _is_loopback(config.ip) and not config.allow_remote:
            raise ValueError(f"ip: {config.ip} is not a loopback address; pass --allow-remote to listen on it")
        if config.transport == "ipc" and (config.allow_remote or config.ip != EngineConfig.ip):
            raise ValueError(f"ip: {config.ip} (and --allow-remote) need --transport tcp; ipc sockets are local files")
        config = replace(config, models=[model_key(model) for model in config.models])
        self.config = config
        self.device = pick_device(config.device)
        self.dtype = pick_dtype(self.device, config.dtype)
        self.autoencoder_dtype = pick_autoencoder_dtype(config.autoencoder_dtype, "--autoencoder-dtype")
        budget = None if config.memory_budget_gb is None else int(config.memory_budget_gb * 1e9)
        self.pool = ModelPool(loader or self._load_pipeline, budget)
        self.queue = JobQueue(config.max_batch)
        self.worker = Worker(self.queue, self.pool, self._emit)
        self.jobs: dict[str, Job] = {}  # queued, running and retained, by request id
        self.sessions: dict[str, float] = {}  # client session -> last request time
        self.declared: OrderedDict[str, int] = OrderedDict()  # session -> its hello max_message_bytes
        self.session = uuid.uuid4().hex
        self.key = connection.new_key().encode("ascii")
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
        from sa3_engine.pipeline import Pipeline

        # "coreml" is passed through so a model without a fresh export fails instead of quietly running in torch
        device = "coreml" if self.config.device == "coreml" else self.device
        return Pipeline.load(model, models_dir=self.config.models_dir, device=device, dtype=self.dtype,
                             autoencoder_dtype=self.autoencoder_dtype)

    # --- lifecycle -------------------------------------------------------------------------------

    def serve(self) -> int:
        """Bind, announce through the connection file, answer until stopped; returns the exit code."""
        try:
            self._lock_fd = self._take_lock()
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
        self._events.setsockopt(zmq.MAXMSGSIZE, SUBSCRIPTION_BYTES)  # nobody sends anything else to it
        self._events.setsockopt(zmq.XPUB_MANUAL, 1)  # the engine decides which subscriptions to keep
        for sock in (self._router, self._events):
            sock.setsockopt(zmq.LINGER, 1000)
        endpoints = []
        try:
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
            context.term()
            for endpoint in endpoints:
                if endpoint.startswith("ipc://"):
                    Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)

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
            self._router.bind(endpoints[0])
            self._events.bind(endpoints[1])
            for endpoint in endpoints:  # the folder should be user-only already; the sockets are, too
                os.chmod(endpoint[len("ipc://"):], 0o600)
        else:
            host = cfg.ip
            if ":" in host:
                for sock in (self._router, self._events):
                    sock.setsockopt(zmq.IPV6, 1)
                host = f"[{host}]"
            endpoints = [f"tcp://{host}:{sock.bind_to_random_port(f'tcp://{host}')}"
                         for sock in (self._router, self._events)]
        return connection.ConnectionInfo(cfg.transport, cfg.ip, endpoints[0], endpoints[1], self.key.decode("ascii"),
                                         pid, socket.gethostname())

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
                    self._on_subscription(self._events.recv())
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
        refusal = self._oversized(message, self._client_limits(session))
        if refusal is not None:  # its client would drop the connection, or the reply: say so instead
            log.warning("%s to session %s not sent: %s", msg_type, session, refusal["message"])
            message.content, message.buffers = refusal, []
        self._router.send_multipart([*routing, *encode(message, self.key)], copy=False)

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

    def _on_subscription(self, frame: bytes) -> None:
        """In manual mode a (un)subscription applies to the connection it came from; a topic over
        MAX_TOPIC_BYTES is never stored, and ZeroMQ drops a closed connection's subscriptions itself."""
        kind, topic = frame[:1], frame[1:]
        if len(topic) > MAX_TOPIC_BYTES:
            return
        if kind == b"\x00":
            self._events.unsubscribe(topic)
        elif kind == b"\x01":  # a new subscriber: tell it events on its topic now reach it
            self._events.subscribe(topic)
            message = Message(Header.new("welcome", self.session), None, {"topic": topic.decode(errors="replace")})
            self._events.send_multipart([topic, *encode(message, self.key)])

    def _on_request(self, received: tuple[list, bool]) -> None:
        frames, over = received
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

    # --- requests --------------------------------------------------------------------------------

    def _handle(self, waiter: Waiter, message: Message, content: dict) -> tuple[dict, list] | None:
        """The reply (content, buffers), or None when it will be sent once a job ends."""
        kind = message.msg_type
        if kind in GENERATION_TYPES or kind in MODEL_KINDS:
            return self._submit(waiter, message, content)
        return getattr(self, f"_on_{kind}")(waiter, content)

    def _on_hello(self, waiter, content):
        session = waiter.header.session
        self.declared.pop(session, None)  # each hello sets it anew; without the field, the default
        if "max_message_bytes" in content:
            self.declared[session] = content["max_message_bytes"]
            while len(self.declared) > DECLARED_SESSIONS:
                self.declared.popitem(last=False)
        return ok(protocol_version=PROTOCOL_VERSION, pid=os.getpid(), session=self.session,
                  device=describe(self.device), dtype=self.dtype, autoencoder_dtype=self.autoencoder_dtype,
                  requests=sorted(REQUESTS),
                  events=list(EVENT_TYPES), limits=asdict(self.config.limits), models=self.pool.snapshot(),
                  default_model=self._default_model())

    def _on_models(self, waiter, content):
        available = []
        for spec in MODELS.values():
            try:
                found = resolve(spec.id, self.config.models_dir, build_tiny=False)
            except FileNotFoundError:
                found = None
            # tiny-random needs no download: it is usable even before its first build
            usable = found is not None or spec.id == TINY_ID
            source = found.source if found else ("built on first use" if usable else None)
            available.append({"id": spec.id, "kind": spec.kind, "description": spec.description,
                              "found": usable, "source": source,
                              "coreml": bool(found and coreml_export(found.folder))})
        return ok(loaded=self.pool.snapshot(), available=available, default_model=self._default_model())

    def _on_ping(self, waiter, content):
        return ok(busy=any(job.state == "running" for job in self.jobs.values()) or bool(self._cancelling()))

    def _cancelling(self) -> list[Job]:
        """Cancelled jobs (already answered) the worker is still inside: it stops at the next step."""
        return [job for job in self.worker.current if job.state == "cancelled"]

    def _on_status(self, waiter, content):
        now = time.monotonic()
        running = [dict(job.summary(), elapsed_s=now - job.started) for job in self.jobs.values()
                   if job.state == "running"]
        cancelling = [dict(job.summary(), state="cancelling", elapsed_s=now - (job.started or now))
                      for job in self._cancelling()]
        queued = [dict(job.summary(), position=i) for i, job in enumerate(self.queue.order())]
        return ok(pid=os.getpid(), uptime_s=time.time() - self.started, device=self.device, dtype=self.dtype,
                  stopping=self._stopping, models=self.pool.snapshot(), default_model=self._default_model(),
                  memory={"budget_bytes": self.pool.budget_bytes, "used_bytes": self.pool.used_bytes()},
                  running=running, cancelling=cancelling, queued=queued,
                  retained=sum(job.state in FINAL_STATES for job in self.jobs.values()),
                  sessions=sum(now - seen < SESSION_ACTIVE_S for seen in self.sessions.values()))

    def _on_cancel(self, waiter, content):
        job = self._job(content["request_id"])
        if job.state not in FINAL_STATES:
            job.cancel.set()  # a running job stops at its next sampler step
            if self.queue.remove(job.request_id) is not None:
                job.audio = None  # out of the worker's reach
            self._finish_cancelled(job, "cancelled by request")
            self._publish_positions()
        return ok(request_id=job.request_id, state=job.state)

    def _on_result(self, waiter, content):
        job = self._job(content["request_id"])
        if job.state in FINAL_STATES:
            return job.reply
        if not content.get("wait", False):
            raise ProtocolError("not_ready", f"request {job.request_id} is {job.state}", "content.request_id")
        job.waiters.append(waiter)
        return None

    def _on_shutdown(self, waiter, content):
        self.stop()
        return ok(pid=os.getpid())

    def _job(self, request_id: str) -> Job:
        job = self.jobs.get(request_id)
        if job is None:
            raise ProtocolError("unknown_request", f"no request {request_id!r} is queued, running or retained",
                                "content.request_id")
        return job

    def _default_model(self) -> str | None:
        if self.config.models:
            return self.config.models[0]
        loaded = self.pool.snapshot()
        return loaded[0]["model"] if len(loaded) == 1 else None

    def _submit(self, waiter: Waiter, message: Message, content: dict) -> tuple[dict, list] | None:
        request_id = content.pop("request_id", None) or message.header.msg_id
        existing = self.jobs.get(request_id)
        if existing is not None:  # a resubmission: answer with the one job's outcome
            if existing.state in FINAL_STATES:
                return existing.reply
            existing.waiters.append(waiter)
            return None
        if self._stopping:
            raise ProtocolError("shutting_down", "the engine is shutting down and takes no new jobs")
        job = self._new_job(request_id, message, content)
        self._check_room(job)
        job.waiters.append(waiter)
        self._enqueue(job)
        return None

    def _check_room(self, job: Job) -> None:
        """Refuse a job the queue has no room for: ``busy`` (bounds what queued jobs hold)."""
        cfg = self.config
        if self.queue.size(job.session) >= cfg.max_session_jobs:
            raise ProtocolError("busy", f"this session already has {cfg.max_session_jobs} jobs queued (the "
                                "engine's limit); wait for some to end")
        if self.queue.size() >= cfg.max_queued_jobs:
            raise ProtocolError("busy", f"{cfg.max_queued_jobs} jobs are queued (the engine's limit); retry later")
        if job.input_bytes:
            queued = sum(j.input_bytes for j in self.queue.order())
            if queued + job.input_bytes > cfg.max_queued_bytes:
                raise ProtocolError("busy", f"queued jobs hold {queued} bytes of source audio and this one "
                                    f"{job.input_bytes}: over the engine's {cfg.max_queued_bytes}; retry later, "
                                    "or send the audio as a path")

    def _new_job(self, request_id: str, message: Message, content: dict) -> Job:
        model = content.pop("model", None) or self._default_model()
        if model is None:
            raise ProtocolError("bad_request", "content.model: required, the engine has no default model",
                                "content.model")
        model = model_key(model, self.pool)
        output_dir = content.pop("output_dir", None)
        if output_dir is not None:
            _check_output_dir(output_dir)
        audio = content.pop("audio", None)
        if audio is not None and "path" in audio:
            if not os.path.isabs(audio["path"]):
                raise ProtocolError("bad_request", "content.audio.path: must be an absolute path", "content.audio.path")
            audio = audio["path"]
        elif audio is not None:
            audio = audio_from_buffers(audio, message.buffers)
        session = message.header.session
        reply_limit = None if output_dir else self._client_limits(session).max_message_bytes  # files: no audio sent
        return Job(request_id, message.msg_type, session, message.header, model, params=content, audio=audio,
                   output_dir=output_dir, reply_limit=reply_limit)

    def _enqueue(self, job: Job) -> None:
        self.jobs[job.request_id] = job
        self.queue.put(job)
        self._publish(job, "accepted", kind=job.kind, model=job.model)
        self._publish_positions()

    def _publish_positions(self) -> None:
        """A new job hears its position; then a job hears of moves within the first QUEUED_WINDOW
        positions only, so one change costs a bounded number of events however long the queue."""
        for position, job in enumerate(self.queue.order()):
            if job.position != position and (job.position is None or position < QUEUED_WINDOW):
                job.position = position
                self._publish(job, "queued", position=position)

    # --- job outcomes (from the worker) ----------------------------------------------------------

    def _emit(self, event: str, job: Job, **fields) -> None:
        """Called by the worker thread: hand over to the I/O thread."""
        self._outbox.put((event, job, fields))
        self._wake()

    def _wake(self) -> None:
        try:
            os.write(self._wake_w, b"\0")
        except BlockingIOError:  # the pipe is full, so a wake-up is pending anyway
            pass

    def _drain_outbox(self) -> None:
        started = False
        while not self._outbox.empty():
            event, job, fields = self._outbox.get()
            if job.state in FINAL_STATES:  # cancelled while the worker was busy with it
                continue
            try:
                if event == "started":
                    job.state, job.started, started = "running", time.monotonic(), True
                elif event == "progress":
                    job.progress = fields
                    self._publish(job, "progress", **fields)
                elif event == "finished":
                    content, buffers = ok(**fields["content"])[0], fields["buffers"]
                    reply = Message(Header.new(f"{job.header.msg_type}_reply", self.session), job.header, content,
                                    buffers)
                    refusal = self._oversized(reply, self._client_limits(job.session))
                    if refusal is None:
                        self._finish(job, "done", content, buffers)
                    else:  # its client could never receive the results: the job fails (and frees them)
                        self._finish(job, "error", refusal)
                elif event == "failed":
                    self._finish(job, "error", error_content(fields["code"], fields["message"], fields["field"]))
                elif event == "cancelled":
                    self._finish_cancelled(job, "cancelled by request")
            except Exception as exc:  # e.g. a result msgpack cannot encode: that job fails, not the engine
                log.exception("delivering %s of %s failed", event, job.request_id)
                if job.state not in FINAL_STATES:
                    self._finish(job, "error", error_content("internal", f"{type(exc).__name__}: {exc}"))
        if started:
            self._publish_positions()

    def _finish_cancelled(self, job: Job, why: str) -> None:
        self._finish(job, "cancelled", error_content("cancelled", f"request {job.request_id}: {why}"))

    def _finish(self, job: Job, state: str, content: dict, buffers=()) -> None:
        content.setdefault("request_id", job.request_id)
        job.state, job.finished, job.reply = state, time.monotonic(), (content, list(buffers))
        if state == "error":  # the event first: a client usually sees it before the reply ends its wait
            log.warning("%s %s failed: %s: %s", job.kind, job.request_id, content["code"], content["message"])
            self._publish(job, "error", code=content["code"], message=content["message"])
        else:
            self._publish(job, state)
        for waiter in job.waiters:
            self._reply(waiter, content, buffers)
        job.waiters.clear()
        self._forget_finished()

    def _forget_finished(self) -> None:
        """Forget finished jobs, oldest first, past the retention window or over the retained count or bytes."""
        now, cfg = time.monotonic(), self.config
        finished = sorted((job for job in self.jobs.values() if job.state in FINAL_STATES), key=lambda j: j.finished)
        excess = len(finished) - cfg.max_retained
        kept = sum(job.reply_bytes for job in finished)
        for i, job in enumerate(finished):
            if i < excess or kept > cfg.retention_bytes or now - job.finished > cfg.retention_s:
                kept -= job.reply_bytes
                del self.jobs[job.request_id]

    def _sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_sweep < 1.0:
            return
        self._last_sweep = now
        self._forget_finished()
        cutoff = now - SESSION_ACTIVE_S
        self.sessions = {s: seen for s, seen in self.sessions.items() if seen > cutoff}


def model_key(model: str, pool: ModelPool | None = None) -> str:
    """What a model is loaded under: an id as is, a folder by its real path (so ``m``, ``m/`` and ``./m``
    are one model). Refuses at once what can never load, except a folder the pool holds (it can still be
    used and unloaded once deleted); missing files are found (and reported) when loading."""
    if model in MODELS:
        return model
    key = os.path.realpath(model)
    if os.path.isdir(key) or (pool is not None and pool.loaded(key)):
        return key
    raise ProtocolError("unknown_model", f"model: {model!r} is neither a model id ({', '.join(MODELS)}) "
                        "nor a folder", "content.model")


def _check_output_dir(folder: str) -> None:
    """An absolute folder the engine can write to, created if missing: a job never computes for nothing."""
    if not os.path.isabs(folder):
        raise ProtocolError("bad_request", "content.output_dir: must be an absolute path", "content.output_dir")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise ProtocolError("bad_request", f"content.output_dir: cannot create {folder}: {exc.strerror or exc}",
                            "content.output_dir") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ProtocolError("bad_request", f"content.output_dir: {folder} is not writable by the engine",
                            "content.output_dir")


def ok(**content) -> tuple[dict, list]:
    return {"status": "ok", **content}, []


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


# --- command line ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", dest="models", action="append", default=[], metavar="ID_OR_DIR",
                        help="load at start-up and keep resident (repeatable); the first is the default model")
    parser.add_argument("--models-dir", help="folder holding model folders (also SA3_MODELS_DIR)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU; on macOS the DiT runs in CoreML when exported), "
                        "cuda, cuda:N, mps, cpu or coreml")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, else float32), float32, float16, bfloat16")
    parser.add_argument("--autoencoder-dtype", default="auto",
                        help="the SAME autoencoder's dtype: auto (float32, as the official ports keep it), float16, bfloat16")
    parser.add_argument("--transport", choices=connection.TRANSPORTS, default=connection.DEFAULT_TRANSPORT,
                        help="ipc: Unix sockets beside the connection file (the default on POSIX); tcp: a port")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (tcp); loopback unless --allow-remote")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback --ip")
    parser.add_argument("--memory-budget-gb", type=float,
                        help="unload least recently used models when their parameters exceed this")
    parser.add_argument("--connection-file", help=f"where to write the connection file (default: ${connection.CONNECTION_ENV} "
                        "or the per-user runtime folder)")
    parser.add_argument("--max-message-mb", type=float, default=Limits.max_message_bytes / 2**20,
                        help="largest message accepted, buffers included")
    parser.add_argument("--max-batch", type=int, default=8, help="most compatible requests run as one pipeline call")
    parser.add_argument("--retention-s", type=float, default=600.0, help="how long finished results can be fetched again")
    parser.add_argument("--retention-mb", type=float, default=EngineConfig.retention_bytes / 2**20,
                        help="most result audio kept for fetching again; the oldest is forgotten first")
    parser.add_argument("--max-session-jobs", type=int, default=EngineConfig.max_session_jobs,
                        help="most jobs one client session may have queued (more are refused: busy)")
    parser.add_argument("--max-queued-jobs", type=int, default=EngineConfig.max_queued_jobs,
                        help="most jobs queued in all (more are refused: busy)")
    parser.add_argument("--max-queued-mb", type=float, default=EngineConfig.max_queued_bytes / 2**20,
                        help="most source audio (sent as buffers) queued jobs may hold (more is refused: busy)")
    parser.add_argument("--parent-pid", type=int, help="stop once this process, the engine's parent, has exited "
                        "(POSIX; bridge.spawn passes its own pid)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    if args.max_batch < 1:
        raise ValueError(f"--max-batch: must be at least 1, got {args.max_batch}")
    for name in ("max_message_mb", "retention_mb", "max_session_jobs", "max_queued_jobs", "max_queued_mb"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')}: must be positive, got {getattr(args, name)}")
    return EngineConfig(models=args.models, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                        autoencoder_dtype=args.autoencoder_dtype,
                        transport=args.transport, ip=args.ip, allow_remote=args.allow_remote,
                        memory_budget_gb=args.memory_budget_gb, connection_file=args.connection_file,
                        limits=Limits(max_message_bytes=int(args.max_message_mb * 2**20)),
                        max_batch=args.max_batch, retention_s=args.retention_s,
                        retention_bytes=int(args.retention_mb * 2**20), max_session_jobs=args.max_session_jobs,
                        max_queued_jobs=args.max_queued_jobs, max_queued_bytes=int(args.max_queued_mb * 2**20),
                        parent_pid=args.parent_pid)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s sa3-engine %(levelname)s %(message)s", stream=sys.stderr)
    try:
        engine = Engine(config_from_args(args))
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: engine.stop())
        return engine.serve()
    except (ValueError, ProtocolError, EngineRunning) as exc:
        print(f"sa3 serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m sa3_engine.server", description="the persistent SA3 engine")
    add_arguments(_parser, "serve")
    sys.exit(run(_parser.parse_args()))
