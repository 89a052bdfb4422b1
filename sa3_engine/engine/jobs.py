"""The engine's work: jobs, a queue fair across clients that batches compatible generations,
the pool of resident models, and the worker thread that runs jobs against the pipeline.

The worker never touches sockets; it reports through ``emit(event, job, **fields)`` and the
server's I/O thread turns that into replies and events. Job state is written by the I/O thread only;
the worker reads a job's cancel flag. A job's source audio is dropped by the thread that last reads it:
the worker, or the I/O thread for a job it removed from the queue (which the worker never sees).
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bridge.protocol import Header, ProtocolError, audio_to_buffer
from sa3_engine.audio import atomic_path, read_audio, unique_path, write_wav
from sa3_engine.engine.leftovers import Leftovers

log = logging.getLogger("sa3.engine")

MODEL_KINDS = ("load", "unload")
FINAL_STATES = ("done", "error", "cancelled")
# fields that may differ between requests batched into one pipeline call
_PER_ITEM = ("prompt", "duration", "seed")


class Cancelled(Exception):
    """Raised inside the pipeline callback to abort a cancelled job."""


class JobError(Exception):
    """A job failure with a protocol error code."""

    def __init__(self, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def results_too_large(size: str, limit: int) -> JobError:
    """The failure of a job whose results would not fit in one reply its client can receive."""
    return JobError("too_large", f"results: {size}, over the {limit} bytes this client receives in one message "
                    "(its hello max_message_bytes, else the engine's --max-message-mb); send output_dir to have the "
                    "engine write the clips as files on a shared disk, or ask for less audio", "results")


@dataclass
class Job:
    request_id: str
    kind: str  # load | unload | generate | inpaint | extend | variation
    session: str
    header: Header  # the request that created it: the parent of every event
    model: str
    params: dict = field(default_factory=dict)  # the request's fields: Pipeline arguments before call_arguments
    audio: tuple[int, np.ndarray] | str | None = None  # source audio, or a path the worker reads
    output_dir: str | None = None
    reply_limit: int | None = None  # bytes the creating client receives in one message; None: no check
    state: str = "queued"  # queued | running | done | error | cancelled
    cancel: threading.Event = field(default_factory=threading.Event)
    progress: dict = field(default_factory=dict)
    position: int | None = None  # in the queue, as last announced
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    reply: tuple[dict, list] | None = None  # (content, buffers) once final
    waiters: list = field(default_factory=list)  # owned by the server

    @property
    def batch_key(self) -> tuple | None:
        """Jobs with equal keys can share one pipeline call; None for jobs that run alone."""
        if self.kind != "generate" or self.params.get("batch_size", 1) != 1:
            return None
        shared = sorted((k, repr(v)) for k, v in self.params.items() if k not in _PER_ITEM)
        return (self.model, "duration" in self.params, *shared)

    @property
    def input_bytes(self) -> int:
        """Bytes of source audio the job holds: a buffer it was sent (a path holds none)."""
        return self.audio[1].nbytes if isinstance(self.audio, tuple) else 0

    @property
    def reply_bytes(self) -> int:
        """Bytes of the buffers retained with the final reply (the results' audio)."""
        return sum(memoryview(b).nbytes for b in self.reply[1]) if self.reply else 0

    def summary(self) -> dict:
        info = {"request_id": self.request_id, "kind": self.kind, "model": self.model, "session": self.session,
                "state": self.state}
        if self.progress:
            info["progress"] = self.progress
        return info


class JobQueue:
    """Pending jobs: round-robin across sessions, FIFO within one; ``take`` blocks for the next batch."""

    def __init__(self, max_batch: int = 8):
        self.max_batch = max_batch
        self._sessions: OrderedDict[str, deque[Job]] = OrderedDict()  # rotation order
        self._cond = threading.Condition(threading.RLock())  # put holds it while order() takes it again
        self._closed = False

    def put(self, job: Job) -> int:
        """Queue ``job``; its position when queued (0 starts next), even if the worker takes it at once."""
        with self._cond:
            self._sessions.setdefault(job.session, deque()).append(job)
            self._cond.notify()
            return next(i for i, queued in enumerate(self.order()) if queued is job)

    def remove(self, request_id: str) -> Job | None:
        with self._cond:
            for session, jobs in self._sessions.items():
                for job in jobs:
                    if job.request_id == request_id:
                        jobs.remove(job)
                        if not jobs:
                            del self._sessions[session]
                        return job
        return None

    def size(self, session: str | None = None) -> int:
        """How many jobs are queued, in all or from one session."""
        with self._cond:
            if session is not None:
                return len(self._sessions.get(session, ()))
            return sum(len(jobs) for jobs in self._sessions.values())

    def order(self) -> list[Job]:
        """Queued jobs in the order they will start (ignoring batching): one per session per round."""
        with self._cond:
            queues = [list(jobs) for jobs in self._sessions.values()]
        rounds = max((len(q) for q in queues), default=0)
        return [q[r] for r in range(rounds) for q in queues if r < len(q)]

    def take(self) -> list[Job] | None:
        """The next job plus queued jobs that can share its pipeline call; None once closed."""
        with self._cond:
            while not self._sessions and not self._closed:
                self._cond.wait()
            if self._closed:
                return None
            session, jobs = next(iter(self._sessions.items()))
            batch = [jobs.popleft()]
            del self._sessions[session]
            if jobs:  # the session goes to the back of the rotation
                self._sessions[session] = jobs
        key = batch[0].batch_key
        if key is not None:
            for job in self.order():
                if len(batch) >= self.max_batch:
                    break
                if job.batch_key == key and self.remove(job.request_id) is not None:
                    batch.append(job)
        return batch

    def drain(self) -> list[Job]:
        """Remove and return every queued job."""
        with self._cond:
            jobs = [job for q in self._sessions.values() for job in q]
            self._sessions.clear()
        return jobs

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


def parameter_bytes(pipeline) -> int:
    """Bytes of the torch parameters and buffers the pipeline holds, directly or in plain attribute
    objects (such as a text-encoder wrapper); each tensor counted once."""
    import torch

    seen: dict[int, int] = {}

    def visit(obj, depth: int) -> None:
        if isinstance(obj, torch.nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                seen[tensor.data_ptr()] = tensor.numel() * tensor.element_size()
        elif depth and hasattr(obj, "__dict__"):
            for value in vars(obj).values():
                visit(value, depth - 1)

    visit(pipeline, 2)
    return sum(seen.values())


class ModelPool:
    """Loaded pipelines by model id; least recently used ones are unloaded to stay under the budget.

    Only the worker thread loads and unloads; ``snapshot`` may be called from any thread.
    """

    def __init__(self, loader: Callable[[str], object], budget_bytes: int | None = None):
        self.loader, self.budget_bytes = loader, budget_bytes
        self._models: OrderedDict[str, tuple[object, int]] = OrderedDict()  # LRU first
        self._lock = threading.RLock()

    def get(self, model: str):
        with self._lock:
            if model in self._models:
                self._models.move_to_end(model)
                return self._models[model][0]
        started = time.perf_counter()
        try:
            pipeline = self.loader(model)
        except FileNotFoundError as exc:
            raise JobError("unknown_model", f"model {model!r}: {exc}") from None
        size = parameter_bytes(pipeline)
        with self._lock:
            self._models[model] = (pipeline, size)
            evicted = self._evict(keep=model)
        if evicted:
            _release_memory()
        log.info("loaded %s (%.1f MB) in %.2f s%s", model, size / 1e6, time.perf_counter() - started,
                 f"; unloaded {', '.join(evicted)} to stay in budget" if evicted else "")
        return pipeline

    def _evict(self, keep: str) -> list[str]:
        evicted = []
        while self.budget_bytes is not None and self.used_bytes() > self.budget_bytes and len(self._models) > 1:
            victim = next(m for m in self._models if m != keep)
            del self._models[victim]
            evicted.append(victim)
        return evicted

    def loaded(self, model: str) -> bool:
        with self._lock:
            return model in self._models

    def unload(self, model: str) -> bool:
        with self._lock:
            found = self._models.pop(model, None) is not None
        if found:
            _release_memory()
        return found

    def used_bytes(self) -> int:
        with self._lock:
            return sum(size for _, size in self._models.values())

    def snapshot(self) -> list[dict]:
        with self._lock:
            items = list(self._models.items())
        return [
            {"model": key, "model_id": p.model_id, "device": str(p.device), "sample_rate": p.sample_rate,
             "max_seconds": p.max_seconds, "default_steps": p.default_steps,
             "default_cfg_scale": p.default_cfg_scale, "is_base": p.is_base, "bytes": size,
             "coreml": bool(getattr(p, "uses_coreml", False))}
            for key, (p, size) in items
        ]


def _release_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# job kind -> the Pipeline method that runs it
PIPELINE_METHODS = {"generate": "generate", "inpaint": "inpaint", "extend": "extend", "variation": "variation"}


def call_arguments(job: Job) -> dict:
    """Keyword arguments of the job's Pipeline method (``PIPELINE_METHODS``): the request's fields, plus
    its source audio (read here when sent as a path) and, for inpainting, the regions as (start, end) pairs.
    The pipeline validates them and fills in defaults (a duration as long as the source)."""
    args = dict(job.params)
    if "loras" in args:
        args["loras"] = [tuple(pair) for pair in args["loras"]]
    if job.kind == "generate":
        return args
    if isinstance(job.audio, str):
        try:
            audio, rate = read_audio(job.audio)
        except (OSError, RuntimeError, ValueError) as exc:  # missing, unreadable or not audio
            raise ValueError(f"content.audio.path: {exc}") from None
    else:
        rate, audio = job.audio
    args.update(audio=audio, sample_rate=rate)
    if job.kind == "inpaint":  # seconds or lists of them; the protocol checked that they pair up
        starts, ends = ([v] if not isinstance(v, list) else v for v in (args.pop("mask_start"), args.pop("mask_end")))
        args["regions"] = list(zip(starts, ends, strict=True))
    return args


def batched_arguments(jobs: list[Job]) -> dict:
    """One call for compatible generate jobs: per-item prompts, durations and seeds as lists."""
    args = call_arguments(jobs[0])
    args["prompt"] = [job.params.get("prompt", "") for job in jobs]
    if "duration" in args:  # the batch key makes it present in all jobs or in none
        args["duration"] = [job.params["duration"] for job in jobs]
    # a random seed is drawn here so every item's seed is known and reported
    args["seed"] = [s if (s := job.params.get("seed", -1)) >= 0 else secrets.randbelow(2**31) for job in jobs]
    return args


class Worker:
    """Runs batches from the queue on the pool's pipelines, one at a time, in its own thread."""

    def __init__(self, queue: JobQueue, pool: ModelPool, emit: Callable[..., None], leftovers: Leftovers | None = None):
        self.queue, self.pool, self.emit = queue, pool, emit
        self.leftovers = leftovers or Leftovers()  # where output files being written are listed
        self.current: list[Job] = []  # the jobs being run, cancelled ones included until they let go
        self.thread = threading.Thread(target=self._loop, name="sa3-worker", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while (batch := self.queue.take()) is not None:
            self.process(batch)

    def process(self, batch: list[Job]) -> None:
        """Run the jobs of a batch not cancelled meanwhile, then drop their source audio (here only: the
        I/O thread may end a job while this thread still reads its audio)."""
        live = [job for job in batch if not job.cancel.is_set()]
        self.current = live
        try:
            for job in live:
                self.emit("started", job)
            if live:
                self._run(live)
        finally:
            self.current = []
            for job in batch:
                job.audio = None

    def _run(self, jobs: list[Job]) -> None:
        try:
            for job, (content, buffers) in zip(jobs, self._execute(jobs), strict=True):
                self.emit("finished", job, content=content, buffers=buffers)
        except Cancelled:
            for job in jobs:
                self.emit("cancelled", job)
        except Exception as exc:
            if len(jobs) > 1:  # find out which request fails: the others still get their results
                log.warning("batch of %d failed (%s); running its jobs one by one", len(jobs), exc)
                for job in jobs:
                    self._run([job])
                return
            code, message, field = _failure(exc)
            if code == "internal":
                log.exception("job %s failed", jobs[0].request_id)
            self.emit("failed", jobs[0], code=code, message=message, field=field)

    def _execute(self, jobs: list[Job]) -> list[tuple[dict, list]]:
        job = jobs[0]
        if job.kind == "load":
            self.pool.get(job.model)
            return [({"model": job.model, "models": self.pool.snapshot()}, [])]
        if job.kind == "unload":
            return [({"model": job.model, "unloaded": self.pool.unload(job.model)}, [])]
        pipeline = self.pool.get(job.model)
        if all(j.cancel.is_set() for j in jobs):  # cancelled while its model loaded
            raise Cancelled
        args = batched_arguments(jobs) if len(jobs) > 1 else call_arguments(job)
        _refuse_oversized(jobs, args, pipeline)

        def on_step(info: dict) -> None:
            for j in jobs:
                self.emit("progress", j, stage=info["stage"], i=info["i"], n=info["n"])
            if all(j.cancel.is_set() for j in jobs):
                raise Cancelled

        generations = getattr(pipeline, PIPELINE_METHODS[job.kind])(**args, callback=on_step)
        per_job = len(generations) // len(jobs)
        return [_results(j, generations[k * per_job : (k + 1) * per_job], len(jobs), self.leftovers)
                for k, j in enumerate(jobs)]


def _refuse_oversized(jobs: list[Job], args: dict, pipeline) -> None:
    """Fail before computing a job whose audio alone would exceed what its client receives in one reply
    (the server checks the whole reply exactly when the job ends). Only when the request gave the duration."""
    if "duration" not in args:
        return
    clips = [[d] for d in args["duration"]] if len(jobs) > 1 else [[args["duration"]] * args.get("batch_size", 1)]
    for job, seconds in zip(jobs, clips, strict=True):
        if job.reply_limit is None:
            continue
        size = sum(round(s * pipeline.sample_rate) for s in seconds) * pipeline.channels * 4  # float32
        if size > job.reply_limit:
            raise results_too_large(f"{len(seconds)} clip(s) of {max(seconds):g} s hold {size} bytes of audio",
                                    job.reply_limit)


# Pipeline argument names -> the request fields a client sent (call_arguments maps the other way).
CONTENT_FIELDS = {
    "mask_start": "mask_start", "mask_end": "mask_end", "inpaint_audio": "audio",
    "init_audio": "audio", "init_noise_level": "init_noise_level", "duration": "duration", "loras": "loras",
    "prompt": "prompt", "negative_prompt": "negative_prompt", "seed": "seed", "steps": "steps",
    "cfg_scale": "cfg_scale", "sampler": "sampler", "batch_size": "batch_size",
}
_NAMED = re.compile(r"^(content\.)?([a-z_]+)((?:\[\d+\])?)(.*)$", re.S)


def _failure(exc: Exception) -> tuple[str, str, str | None]:
    """(code, message, field) for a failed job; a ValueError naming a pipeline argument names the request field."""
    if isinstance(exc, (JobError, ProtocolError)):
        return exc.code, exc.message, exc.field
    if isinstance(exc, ValueError):
        message = str(exc)
        match = _NAMED.match(message)
        if match and (match[1] or match[2] in CONTENT_FIELDS) and match[4].startswith((":", " ", ".")):
            field = f"content.{CONTENT_FIELDS.get(match[2], match[2])}"
            return "bad_request", f"{field}{match[3]}{match[4]}", field
        return "bad_request", message, None
    return "internal", f"{type(exc).__name__}: {exc}", None


def _results(job: Job, generations: list, batched: int, leftovers: Leftovers | None = None) -> tuple[dict, list]:
    """The reply content and buffers for one job: audio as buffers, or WAV files in output_dir."""
    results, buffers = [], []
    for index, gen in enumerate(generations):
        entry = {"seed": int(gen.seed), "params": gen.params, "timings": gen.timings}
        if job.output_dir:
            try:
                path = unique_path(Path(job.output_dir) / f"{job.request_id}-{index}.wav")
                # written into a listed temporary file: if the engine is killed meanwhile, the next one removes it
                with atomic_path(path) as tmp, (leftovers or Leftovers()).listed(tmp):
                    write_wav(tmp, gen.audio, gen.sample_rate, bit_depth="float")
            except OSError as exc:  # e.g. removed, made read-only or full since the request came
                raise JobError("bad_request", f"content.output_dir: cannot write {job.request_id}-{index}.wav "
                               f"there: {exc.strerror or exc}", "content.output_dir") from None
            entry["audio"] = {"path": str(path), "sample_rate": int(gen.sample_rate),
                              "channels": int(gen.audio.shape[0]), "frames": int(gen.audio.shape[1])}
        else:
            entry["audio"], buffer = audio_to_buffer(gen.audio, gen.sample_rate, len(buffers))
            buffers.append(buffer)
        results.append(entry)
    return {"request_id": job.request_id, "model": job.model, "batched": batched, "results": results}, buffers
