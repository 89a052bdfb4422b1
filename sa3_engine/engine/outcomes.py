"""A job's life after it is accepted, on the engine's I/O thread: queue positions, the worker's events
handed over through the outbox, final replies to every waiter, and retention of finished results.

Mixed into ``server.Engine``.
"""

from __future__ import annotations

import logging
import os
import time

from bridge.protocol import Header, Message, error_content
from sa3_engine.engine.jobs import FINAL_STATES, Job
from sa3_engine.engine.requests import SESSION_ACTIVE_S, ok

log = logging.getLogger("sa3.engine")

QUEUED_WINDOW = 8  # queued events are published for the first positions only


class JobOutcomes:
    def _enqueue(self, job: Job) -> None:
        self.jobs[job.request_id] = job
        job.position = self.queue.put(job)  # an idle worker may take it at once: announce it all the same
        self._publish(job, "accepted", kind=job.kind, model=job.model)
        self._publish(job, "queued", position=job.position)
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
