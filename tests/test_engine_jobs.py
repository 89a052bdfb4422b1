"""The engine's job layer without sockets: the fair batching queue, the model pool, and the worker
(batches, failures that stay with their job, cancellation)."""

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from bridge.protocol import Header
from sa3_engine.engine.jobs import Job, JobQueue, ModelPool, Worker


def job(rid, session, **params):
    return Job(rid, "generate", session, Header.new("generate", session), "m", params=params)


def test_queue_is_round_robin_across_sessions_and_fifo_within_one():
    q = JobQueue(max_batch=1)
    for rid, session in [("a1", "A"), ("a2", "A"), ("a3", "A"), ("b1", "B"), ("c1", "C"), ("b2", "B")]:
        q.put(job(rid, session, steps=int(rid[1])))
    assert [j.request_id for j in q.order()] == ["a1", "b1", "c1", "a2", "b2", "a3"]
    taken = [q.take()[0].request_id for _ in range(6)]
    assert taken == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_queue_batches_only_compatible_generations_in_queue_order():
    q = JobQueue(max_batch=3)
    q.put(job("a1", "A", steps=2, prompt="x"))
    q.put(job("a2", "A", steps=3, prompt="y"))  # different steps: not compatible
    q.put(job("b1", "B", steps=2, prompt="z", seed=4))
    q.put(job("c1", "C", steps=2, prompt="w", batch_size=2))  # several clips: runs alone
    q.put(job("d1", "D", steps=2, prompt="v"))
    q.put(job("e1", "E", steps=2))
    assert [j.request_id for j in q.take()] == ["a1", "b1", "d1"]
    assert q.remove("e1").request_id == "e1" and q.remove("e1") is None
    assert [[j.request_id for j in q.take()] for _ in range(2)] == [["c1"], ["a2"]]


def test_queue_take_returns_none_once_closed():
    q = JobQueue()
    threading.Timer(0.05, q.close).start()
    assert q.take() is None


class Weights:
    """Stands in for a pipeline in pool tests: only its tensors' bytes matter."""

    def __init__(self, name, n):
        self.model_id, self.device, self.sample_rate, self.max_seconds = name, "cpu", 44100, 10.0
        self.default_steps, self.default_cfg_scale, self.is_base = 8, 1.0, False
        self.net = torch.nn.Linear(n, 1, bias=False)


def test_pool_unloads_least_recently_used_models_over_the_budget():
    sizes = {"a": 100, "b": 200, "c": 300}
    loads = []
    pool = ModelPool(lambda m: loads.append(m) or Weights(m, sizes[m]), budget_bytes=2100)
    pool.get("a")
    pool.get("b")
    pool.get("a")  # resident: no reload, and now more recent than b
    assert loads == ["a", "b"] and pool.used_bytes() == 1200
    pool.get("c")  # 2400 bytes: b is the least recently used
    assert [m["model"] for m in pool.snapshot()] == ["a", "c"] and pool.used_bytes() == 1600
    assert pool.unload("a") and not pool.unload("a")
    assert [(m["model"], m["bytes"]) for m in pool.snapshot()] == [("c", 1200)]


def test_pool_reports_missing_models_as_unknown_model():
    def loader(model):
        raise FileNotFoundError(f"{model} is not here")

    with pytest.raises(Exception) as err:
        ModelPool(loader).get("ghost")
    assert err.value.code == "unknown_model" and "ghost" in err.value.message


class FailsOnBad:
    """Stands in for a pipeline in worker tests: fails any call that includes the prompt 'bad'."""

    def __init__(self):
        self.calls = []

    def generate(self, prompt, callback=None, **kwargs):
        prompts = prompt if isinstance(prompt, list) else [prompt]
        self.calls.append(prompts)
        callback({"stage": "sample", "i": 1, "n": 1})
        if "bad" in prompts:
            raise RuntimeError("boom")
        return [SimpleNamespace(audio=np.zeros((2, 4), np.float32), sample_rate=44100, seed=0, params={"prompt": p},
                                timings={}) for p in prompts]


def test_a_failing_batch_is_rerun_one_by_one_so_only_the_bad_job_fails():
    pipeline = FailsOnBad()
    pool = ModelPool(lambda m: pipeline)
    events = []
    worker = Worker(JobQueue(), pool, lambda event, j, **f: events.append((event, j.request_id, f)))
    jobs = [job(f"r{i}", "S", prompt=p, duration=1.0) for i, p in enumerate(["ok1", "bad", "ok2"])]
    worker._run(jobs)
    outcome = {rid: (event, f) for event, rid, f in events if event in ("finished", "failed")}
    assert outcome["r1"][0] == "failed" and outcome["r1"][1]["code"] == "internal" and "boom" in outcome["r1"][1]["message"]
    assert outcome["r0"][0] == outcome["r2"][0] == "finished"
    assert outcome["r2"][1]["content"]["results"][0]["params"] == {"prompt": "ok2"}
    assert pipeline.calls == [["ok1", "bad", "ok2"], ["ok1"], ["bad"], ["ok2"]]


def test_a_batched_job_whose_audio_would_not_reach_its_client_fails_alone_before_computing():
    pipeline = FailsOnBad()
    pipeline.sample_rate, pipeline.channels = 44100, 2
    events = []
    worker = Worker(JobQueue(), ModelPool(lambda m: pipeline), lambda event, j, **f: events.append((event, j.request_id, f)))
    jobs = [job("big", "A", prompt="a", duration=1.0), job("fits", "B", prompt="b", duration=1.0)]
    jobs[0].reply_limit, jobs[1].reply_limit = 352_799, 352_800  # 1 s of stereo float32 is 352800 bytes
    worker._run(jobs)
    outcome = {rid: (event, f) for event, rid, f in events if event in ("finished", "failed")}
    assert outcome["big"][0] == "failed" and outcome["big"][1]["code"] == "too_large"
    assert outcome["big"][1]["field"] == "results" and outcome["fits"][0] == "finished"
    assert pipeline.calls == [["b"]]


def test_cancel_flag_aborts_the_pipeline_call_at_the_next_step():
    pipeline = FailsOnBad()
    events = []
    worker = Worker(JobQueue(), ModelPool(lambda m: pipeline), lambda event, j, **f: events.append(event))
    running = job("r", "S", prompt="fine")

    def generate(prompt, callback, **kwargs):
        running.cancel.set()  # as the I/O thread does on a cancel request
        callback({"stage": "sample", "i": 1, "n": 2})
        raise AssertionError("the step after a cancel must not run")

    pipeline.generate = generate
    worker.process([running])
    assert events == ["started", "progress", "cancelled"]


def test_a_job_cancelled_while_its_model_loads_never_runs_and_only_the_worker_drops_its_audio():
    pipeline, events = FailsOnBad(), []
    source = (44100, np.zeros((2, 100), np.float32))
    variation = Job("v", "variation", "S", Header.new("variation", "S"), "m", audio=source)
    seen_during_load = []

    def load(model):  # the I/O thread answers a cancel meanwhile; the audio must still be there
        variation.cancel.set()
        seen_during_load.append(variation.audio is source)
        return pipeline

    worker = Worker(JobQueue(), ModelPool(load), lambda event, j, **f: events.append((event, f)))
    worker.process([variation])
    assert [event for event, _ in events] == ["started", "cancelled"] and pipeline.calls == []
    assert seen_during_load == [True] and variation.audio is None and worker.current == []


# --- life cycle ------------------------------------------------------------------------------------
