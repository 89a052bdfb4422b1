"""The engine's request handlers: one method per request type, answered on the I/O thread.

Mixed into ``server.Engine``: a handler returns the reply (content, buffers), or None when a job will
answer once it ends. Jobs are created here and handed to ``outcomes`` for the rest of their life.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass

from bridge.protocol import (
    EVENT_TYPES,
    GENERATION_TYPES,
    PROTOCOL_VERSION,
    REQUESTS,
    Header,
    Message,
    ProtocolError,
    audio_from_buffers,
)
from sa3_engine.engine.jobs import FINAL_STATES, MODEL_KINDS, Job, ModelPool
from sa3_engine.runtime.coreml import coreml_export
from sa3_engine.runtime.device import describe
from sa3_engine.weights.registry import MODELS, TINY_ID, resolve

SESSION_ACTIVE_S = 60.0
DECLARED_SESSIONS = 10_000  # hello max_message_bytes declarations kept, most recent first


@dataclass
class Waiter:
    """A request waiting for a job's outcome: where to send the reply and what it answers."""

    routing: list
    header: Header


class RequestHandlers:
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
                  precision=self.precision, compile=self.config.compile, requests=sorted(REQUESTS),
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
                  precision=self.precision,
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
        if audio is not None and "path" in audio:  # absolute: checked with the other fields
            audio = audio["path"]
        elif audio is not None:
            audio = audio_from_buffers(audio, message.buffers)
        session = message.header.session
        reply_limit = None if output_dir else self._client_limits(session).max_message_bytes  # files: no audio sent
        return Job(request_id, message.msg_type, session, message.header, model, params=content, audio=audio,
                   output_dir=output_dir, reply_limit=reply_limit)


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
