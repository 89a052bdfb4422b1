"""The engine's limits and queue events, with the engine in this process and a pipeline the test gates:
bounded sockets, busy refusals of a full queue, queued positions, retention by bytes, cancelling, and a
model folder however spelt; the engine lock."""

import os
import shutil
import socket
import threading
import uuid
from contextlib import contextmanager
from types import SimpleNamespace

import numpy as np
import pytest
import zmq
from test_engine import Raw, wait_until

from bridge import connection
from bridge.protocol import Header, decode, split_routing
from sa3_engine.cli.serve import Engine, EngineConfig, EngineRunning
from sa3_engine.engine.outcomes import QUEUED_WINDOW
from sa3_engine.engine.server import REQUEST_RCVHWM, SUBSCRIPTION_BYTES


class Gated:
    """Stands in for a pipeline: 441-frame clips at once, or, while ``gate`` is clear, only once it opens
    (with no step reported before, so a cancelled job keeps the worker until then)."""

    def __init__(self):
        self.model_id, self.device, self.sample_rate, self.max_seconds = "gated", "cpu", 44100, 10.0
        self.default_steps, self.default_cfg_scale, self.is_base, self.channels = 8, 1.0, False, 2
        self.gate = threading.Event()
        self.gate.set()

    def generate(self, prompt="", callback=None, batch_size=1, **kwargs):
        assert self.gate.wait(30), "the test never opened the gate"
        callback({"stage": "sample", "i": 1, "n": 1})
        prompts = prompt if isinstance(prompt, list) else [prompt] * batch_size
        return [SimpleNamespace(audio=np.zeros((2, 441), np.float32), sample_rate=44100, seed=0, params={},
                                timings={}) for _ in prompts]

    variation = generate


CLIP_BYTES = 2 * 441 * 4


@contextmanager
def engine_in_process(folder, pipeline=None, loader=None, **config):
    """A serving Engine on a thread of this process (ipc on POSIX), its pipelines from ``loader``; its
    default model is called tiny-random."""
    path = folder / "engine.json"
    config.setdefault("models", ["tiny-random"])
    engine = Engine(EngineConfig(connection_file=str(path), device="cpu", **config),
                    loader=loader or (lambda model: pipeline))
    thread = threading.Thread(target=engine.serve, daemon=True)
    thread.start()
    wait_until(lambda: path.exists() and connection.read(path).key == engine.key.decode(), timeout=30)
    try:
        yield engine
    finally:
        if pipeline is not None:
            pipeline.gate.set()
        engine.stop()
        thread.join(40)
        assert not thread.is_alive()


def wait_running(engine, request_id: str) -> None:
    """Until the engine itself counts the job as running (the pipeline may be entered a moment before)."""
    wait_until(lambda: request_id in engine.jobs and engine.jobs[request_id].state == "running")


def raw_client(engine) -> Raw:
    return Raw(connection.read(engine.connection_path))


def cancel(client: Raw, request_id: str) -> dict:
    """The job's own reply and the cancel_reply, by reply type (the job's usually comes first)."""
    client.send("cancel", {"request_id": request_id})
    return {reply.msg_type: reply.content for reply in (client.recv(), client.recv())}


def test_the_request_socket_holds_few_messages_per_peer_and_the_event_socket_tiny_ones(tmp_path):

    with engine_in_process(tmp_path, Gated()) as engine:
        assert engine._router.getsockopt(zmq.RCVHWM) == REQUEST_RCVHWM <= 16
        assert engine._events.getsockopt(zmq.MAXMSGSIZE) == SUBSCRIPTION_BYTES <= 1024


def test_a_full_queue_refuses_jobs_with_busy_and_takes_them_again_once_it_drains(tmp_path):
    pipeline = Gated()
    pipeline.gate.clear()
    source = np.zeros((2, 5000), np.float32)  # 40 kB
    audio = {"buffer": 0, "sample_rate": 44100, "channels": 2, "frames": 5000}
    with engine_in_process(tmp_path, pipeline, max_session_jobs=2, max_queued_jobs=4,
                           max_queued_bytes=100_000) as engine:
        a, b, c = (raw_client(engine) for _ in range(3))
        a.send("generate", {"request_id": "running"})
        wait_running(engine, "running")
        a.send("generate", {"request_id": "a0"})
        a.send("variation", {"request_id": "a1", "audio": audio}, [source.tobytes()])
        per_session = a.call("generate", {"request_id": "a2"})
        assert per_session.content["code"] == "busy" and "session" in per_session.content["message"]
        b.send("variation", {"request_id": "b0", "audio": audio}, [source.tobytes()])  # 80 kB queued
        too_many_bytes = b.call("variation", {"request_id": "b1", "audio": audio}, [source.tobytes()])
        assert too_many_bytes.content["code"] == "busy" and "path" in too_many_bytes.content["message"]
        b.send("generate", {"request_id": "b2"})  # the fourth queued job
        too_many_jobs = c.call("generate", {"request_id": "c0"})
        assert too_many_jobs.content["code"] == "busy" and "4 jobs" in too_many_jobs.content["message"]
        pipeline.gate.set()
        done = [r.recv().content for r in (a, a, a, b, b)]
        assert all(d["status"] == "ok" for d in done), done
        assert c.call("generate", {"request_id": "c1"}).content["status"] == "ok"
        for r in (a, b, c):
            r.close()


def test_queued_events_only_announce_moves_within_the_first_positions(tmp_path):

    pipeline = Gated()
    pipeline.gate.clear()
    with engine_in_process(tmp_path, pipeline) as engine:
        client = raw_client(engine)
        sub = client.context.socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"")
        sub.connect(connection.read(engine.connection_path).event_endpoint)
        assert sub.poll(20_000)  # a welcome: subscribed
        key = client.key

        def events_until_accepted(request_id):
            seen = []
            while True:
                assert sub.poll(20_000), "no event from the engine"
                event = decode(split_routing(sub.recv_multipart())[1], key)
                if event.msg_type == "accepted" and event.content["request_id"] == request_id:
                    return seen
                seen.append(event)

        client.send("generate", {"request_id": "running"})
        wait_running(engine, "running")
        jobs = [f"q{i}" for i in range(QUEUED_WINDOW + 4)]
        for rid in jobs:  # one session each: the rotation order is the arrival order
            client.send("generate", {"request_id": rid}, header=Header.new("generate", uuid.uuid4().hex))
        client.send("generate", {"request_id": "mark1"}, header=Header.new("generate", uuid.uuid4().hex))
        queued = [(e.content["request_id"], e.content["position"]) for e in events_until_accepted("mark1")
                  if e.msg_type == "queued" and e.content["request_id"] in jobs]
        assert queued == [(rid, i) for i, rid in enumerate(jobs)]  # each hears its place once, far back too
        assert cancel(client, "q0")["cancel_reply"]["state"] == "cancelled"
        client.send("generate", {"request_id": "mark2"}, header=Header.new("generate", uuid.uuid4().hex))
        moved = [(e.content["request_id"], e.content["position"]) for e in events_until_accepted("mark2")
                 if e.msg_type == "queued" and e.content["request_id"] in jobs]
        # everyone moved up one place; only the jobs now within the window hear of it
        assert moved == [(rid, i) for i, rid in enumerate(jobs[1:QUEUED_WINDOW + 1])]
        client.close()


def test_retained_results_are_forgotten_oldest_first_over_the_byte_budget(tmp_path):
    with engine_in_process(tmp_path, Gated(), retention_bytes=2 * CLIP_BYTES) as engine:
        client = raw_client(engine)
        for i in range(4):
            assert client.call("generate", {"request_id": f"r{i}"}).content["status"] == "ok"
        fetched = {f"r{i}": client.call("result", {"request_id": f"r{i}"}).content for i in range(4)}
        assert [fetched[r].get("code") for r in ("r0", "r1")] == ["unknown_request"] * 2
        assert all(fetched[r]["status"] == "ok" for r in ("r2", "r3"))
        assert client.call("status").content["retained"] == 2
        client.close()


def test_ping_is_busy_and_status_shows_cancelling_until_the_worker_lets_go(tmp_path):
    pipeline = Gated()
    pipeline.gate.clear()
    with engine_in_process(tmp_path, pipeline) as engine:
        client = raw_client(engine)
        client.send("generate", {"request_id": "slow"})
        wait_running(engine, "slow")
        replies = cancel(client, "slow")
        assert replies["cancel_reply"]["state"] == "cancelled" and replies["generate_reply"]["code"] == "cancelled"
        assert client.call("ping").content["busy"] is True  # the worker is still inside it
        status = client.call("status").content
        assert status["running"] == [] and [(j["request_id"], j["state"]) for j in status["cancelling"]] == [
            ("slow", "cancelling")]
        pipeline.gate.set()
        wait_until(lambda: client.call("ping").content["busy"] is False)
        assert client.call("status").content["cancelling"] == []
        client.close()


def test_a_model_folder_is_one_model_however_spelt_and_unloads_once_deleted(tmp_path):
    folder = tmp_path / "m1"
    folder.mkdir()
    loads = []

    def loader(model):
        loads.append(model)
        return Gated()

    with engine_in_process(tmp_path, loader=loader, models=[]) as engine:
        client = raw_client(engine)
        for spelling in (str(folder), f"{folder}/", f"{tmp_path}/./m1", f"{folder}/."):
            reply = client.call("load", {"model": spelling}).content
            assert reply["status"] == "ok" and reply["model"] == os.path.realpath(folder), reply
        assert loads == [os.path.realpath(folder)]
        assert [m["model"] for m in client.call("status").content["models"]] == loads
        shutil.rmtree(folder)
        assert client.call("generate", {"model": f"{folder}/"}).content["status"] == "ok"  # still resident
        assert client.call("unload", {"model": str(folder)}).content["unloaded"] is True
        gone = client.call("load", {"model": str(folder)}).content
        assert gone["code"] == "unknown_model" and gone["field"] == "content.model"
        client.close()


@pytest.mark.skipif(os.name != "posix", reason="the engine lock is an flock")
def test_the_lock_not_the_pid_says_whether_an_engine_runs(tmp_path):
    path = tmp_path / "engine.json"
    # left behind by a killed engine whose pid now belongs to a live process (this one)
    connection.write(connection.ConnectionInfo("tcp", "127.0.0.1", "tcp://127.0.0.1:9", "tcp://127.0.0.1:10",
                                               connection.new_key(), os.getpid(), socket.gethostname()), path)
    with engine_in_process(tmp_path, Gated()) as engine:
        assert connection.read(path).key == engine.key.decode()  # it started, and replaced the file
        with pytest.raises(EngineRunning, match="already running"):  # a second one, even a racing one, cannot
            Engine(EngineConfig(connection_file=str(path), device="cpu")).serve()
        assert connection.engine_alive(path, connection.read(path)) is True
    assert not path.exists() and connection.lock_path(path).exists()  # the lock file stays, unlocked
