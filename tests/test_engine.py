"""The engine: the wire seen by a raw client, refusals that never stop it, and its life cycle (SIGTERM, shutdown, a second engine, remote binding, ipc)."""

import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid

import numpy as np
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge import connection
from bridge.client import EngineClient, EngineError, RequestDropped
from bridge.protocol import (
    DELIMITER,
    Header,
    Limits,
    Message,
    ProtocolError,
    audio_from_buffers,
    decode,
    encode,
    packb,
    sign,
    split_routing,
)
from bridge.spawn import EngineProcess
from sa3_engine.audio import read_audio
from sa3_engine.cli.serve import Engine, EngineConfig
from sa3_engine.engine.jobs import Job, JobQueue, ModelPool, Worker


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    # tcp here (the hostile-peer cases need a port); the other suites use the default, ipc on POSIX
    with EngineProcess(tmp_path_factory.mktemp("engine"), "--max-message-mb", "8", "--transport", "tcp") as process:
        yield process


class Raw:
    """The wire format by hand: a DEALER, and a SUB on the client's session."""

    def __init__(self, info, subscribe: bool = False):
        self.context = zmq.Context()
        self.key, self.session = info.key_bytes, uuid.uuid4().hex
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(info.request_endpoint)
        self.sub = None
        if subscribe:
            self.sub = self.context.socket(zmq.SUB)
            self.sub.setsockopt(zmq.LINGER, 0)
            self.sub.setsockopt(zmq.SUBSCRIBE, self.session.encode())
            self.sub.connect(info.event_endpoint)
            assert self.event().msg_type == "welcome"

    def send(self, msg_type, content=None, buffers=(), header=None) -> Header:
        header = header or Header.new(msg_type, self.session)
        self.sock.send_multipart(encode(Message(header, None, content or {}, list(buffers)), self.key))
        return header

    def recv(self, timeout=30.0) -> Message:
        assert self.sock.poll(timeout * 1000), "no reply from the engine"
        return decode(split_routing([b"id", *self.sock.recv_multipart()])[1], self.key)

    def event(self, timeout=30.0) -> Message:
        assert self.sub.poll(timeout * 1000), "no event from the engine"
        return decode(split_routing(self.sub.recv_multipart())[1], self.key)

    def call(self, msg_type, content=None, buffers=()) -> Message:
        header = self.send(msg_type, content, buffers)
        reply = self.recv()
        assert reply.parent_header == header
        return reply

    def close(self):
        self.context.destroy(linger=0)

    def __del__(self):
        # a test that fails before close() must not leave a context for the engine's gc.collect() to
        # finalize: zmq's Context.__del__ can block on sockets it still owns
        if not self.context.closed:
            self.context.destroy(linger=0)


@pytest.fixture(scope="module")
def raw(engine):
    client = Raw(engine.info())
    yield client
    client.close()


def test_connection_file_is_private_and_names_the_engine(engine):
    info = engine.info()
    assert stat.S_IMODE(os.stat(engine.connection_file).st_mode) == 0o600
    assert info.pid == engine.proc.pid and info.request_endpoint.startswith("tcp://127.0.0.1:")
    assert len(info.key) == 64 and info.protocol_version == "2.0"


def test_a_generation_on_the_wire_replies_with_buffers_and_publishes_events(engine):
    client = Raw(engine.info(), subscribe=True)
    try:
        request = client.send("generate", {"prompt": "kick", "duration": 0.5, "seed": 5, "steps": 2,
                                           "request_id": "wire-1"})
        reply = client.recv()
        assert reply.msg_type == "generate_reply" and reply.content["status"] == "ok", reply.content
        assert reply.parent_header == request
        (result,) = reply.content["results"]
        rate, audio = audio_from_buffers(result["audio"], reply.buffers)
        assert (rate, audio.shape, result["seed"]) == (44100, (2, 22050), 5)
        assert np.isfinite(audio).all() and np.abs(audio).max() <= 1.0
        events = []
        while not events or events[-1].msg_type not in ("done", "error"):
            events.append(client.event())
        assert {e.content["request_id"] for e in events} == {"wire-1"}
        assert all(e.parent_header == request for e in events)
        kinds = [e.msg_type for e in events]
        assert kinds[0] == "accepted" and kinds[-1] == "done" and "progress" in kinds
        steps = [(e.content["stage"], e.content["i"], e.content["n"]) for e in events if e.msg_type == "progress"]
        assert ("sample", 2, 2) in steps
    finally:
        client.close()


def test_replayed_messages_are_refused_and_fresh_ones_still_answered(raw):
    frames = encode(Message(Header.new("ping", raw.session)), raw.key)
    raw.sock.send_multipart(frames)
    assert raw.recv().content["status"] == "ok"
    raw.sock.send_multipart(frames)  # the same signed message again
    reply = raw.recv()
    assert reply.content["code"] == "replayed" and reply.content["field"] == "header.msg_id"
    stale = Header(uuid.uuid4().hex, "ping", raw.session, "2020-01-01T00:00:00.000000Z")
    raw.send("ping", header=stale)
    reply = raw.recv()
    assert reply.content["code"] == "replayed" and reply.content["field"] == "header.date"
    assert raw.call("ping").content["status"] == "ok"


def test_oversized_messages_are_refused_without_stopping_the_engine(engine, raw):
    reply = raw.call("generate", {"prompt": "x" * (1 << 20)})
    assert reply.content["code"] == "too_large" and reply.content["field"] == "content"
    big = np.zeros((2, 700_000), np.float32)  # two 5.6 MB buffers: each frame fits, the message does not
    reply = raw.call("ping", {}, [big.tobytes(), big.tobytes()])
    assert reply.content["code"] == "too_large"
    reply = raw.call("ping", {}, [b""] * 65)
    assert reply.content["code"] == "too_large"
    # one frame over the 8 MB message limit: ZeroMQ drops the connection before reading it
    doomed = Raw(engine.info())
    doomed.sock.send_multipart([DELIMITER, b"0" * 64, np.zeros(9 << 20, np.uint8).tobytes()])
    assert not doomed.sock.poll(1000)
    doomed.close()
    assert raw.call("ping").content["status"] == "ok"


def within(seconds, call):
    """``call()`` in a thread (so a hang fails the test instead of stalling it); its result or exception."""
    outcome = {}

    def run():
        try:
            outcome["value"] = call()
        except Exception as exc:  # re-raised below, in the test's thread
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"no answer within {seconds} s: the client hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def test_a_request_over_the_engines_limit_is_refused_by_the_client_without_hanging(engine):
    big = np.zeros((2, 1_200_000), np.float32)  # 9.6 MB: one frame over the 8 MiB limit gets no reply at all

    def inpaint(stale_limits: bool):
        with EngineClient(engine.connection_file) as client:
            assert client.hello()["limits"]["max_message_bytes"] == 8 << 20
            if stale_limits:  # as if they were learnt from an engine with a larger limit
                client._engine_limits = Limits()
            try:
                client.inpaint(big, 0.1, 0.2, sample_rate=44100, steps=1)
            except EngineError as exc:
                return exc, client.ping()

    for stale in (False, True):  # stale: sent, dropped by the engine's socket, noticed, limits learnt anew
        err, ping = within(60, lambda stale=stale: inpaint(stale))
        assert err.code == "too_large" and err.field == "content.audio", err
        assert "8388608" in err.message and "path" in err.message and ping > 0
        chain = [err]
        while chain[-1].__context__ is not None:
            chain.append(chain[-1].__context__)
        assert any(isinstance(e, RequestDropped) for e in chain) == stale  # the drop was noticed, not waited out


def test_results_over_what_the_client_receives_fail_before_computing_and_output_dir_gets_them(engine, tmp_path):
    with EngineClient(engine.connection_file, limits=Limits(max_message_bytes=1 << 16)) as client:
        events = []
        with pytest.raises(EngineError) as err:  # 0.5 s of stereo float32 is 176400 bytes
            client.generate("long", duration=0.5, steps=2, on_progress=events.append)
        assert err.value.code == "too_large" and err.value.field == "results"
        assert "176400 bytes" in err.value.message and "output_dir" in err.value.message
        assert not [e for e in events if e["event"] == "progress"]  # refused before any computing
        (on_disk,) = client.generate("long", duration=0.5, steps=2, seed=3, output_dir=str(tmp_path))
        assert on_disk.audio is None and read_audio(on_disk.path)[0].shape == (2, 22050)
        (small,) = client.generate("short", duration=0.1, steps=2, seed=3)  # 35280 bytes: fits
        assert small.audio.shape == (2, 4410)


def test_a_reply_over_the_declared_limit_is_never_sent_and_the_engine_carries_on(engine, raw):
    declared = Raw(engine.info(), subscribe=True)
    try:
        audio_bytes = 11025 * 2 * 4  # 0.25 s: the audio fits, the reply around it does not
        assert declared.call("hello", {"max_message_bytes": audio_bytes + 100}).content["status"] == "ok"
        request = {"duration": 0.25, "steps": 2, "request_id": "just-too-big"}
        reply = declared.call("generate", request)
        assert reply.content["code"] == "too_large" and reply.content["field"] == "results", reply.content
        assert reply.content["request_id"] == "just-too-big" and reply.buffers == []
        events = []
        while not events or events[-1].msg_type not in ("done", "error"):
            events.append(declared.event())
        assert events[-1].content["code"] == "too_large"
        assert any(e.msg_type == "progress" for e in events)  # computed: only the whole reply was over
        # undeclared: the engine's own 8 MiB; 30 s of audio is 10.6 MB, refused before computing
        big = raw.call("generate", {"duration": 30.0, "steps": 2})
        assert big.content["code"] == "too_large" and "output_dir" in big.content["message"]
        # a job that fits its creator, fetched by a client that declared less: refused to that client only
        fine = raw.call("generate", {"duration": 0.25, "steps": 2, "request_id": "fits-its-creator"})
        assert fine.content["status"] == "ok" and len(fine.buffers) == 1
        refetched = declared.call("result", {"request_id": "fits-its-creator"})
        assert refetched.content["code"] == "too_large" and refetched.content["field"] == "results"
        assert raw.call("result", {"request_id": "fits-its-creator"}).buffers == fine.buffers
    finally:
        declared.close()


malformed = st.one_of(
    st.lists(st.binary(max_size=40), min_size=1, max_size=6).map(lambda f: ("garbage", f)),
    st.lists(st.binary(max_size=40), min_size=0, max_size=6).map(lambda f: ("delimited", [DELIMITER, *f])),
    st.tuples(st.sampled_from(["ping", "generate", "status", "nope"]), st.binary(min_size=64, max_size=64))
    .map(lambda t: ("forged", t)),
    st.dictionaries(st.sampled_from(["prompt", "duration", "steps", "seed", "model", "audio", "bogus"]),
                    st.one_of(st.none(), st.integers(-5, 5), st.floats(), st.text(max_size=5), st.booleans(),
                              st.binary(max_size=5)), min_size=1, max_size=3).map(lambda c: ("content", c)),
    st.sampled_from(["1.0", "3.0", "x"]).map(lambda v: ("version", v)),
)
EXPECTED = {"garbage": {"bad_request", "bad_signature"}, "delimited": {"bad_request", "bad_signature"}, "forged": {"bad_signature"},
            "content": {"bad_request", "unknown_model"}, "version": {"unsupported_version"}}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=malformed)
def test_malformed_unsigned_and_bad_messages_get_error_replies(raw, case):
    kind, data = case
    if kind in ("garbage", "delimited"):
        raw.sock.send_multipart(data)
    elif kind == "forged":
        msg_type, signature = data
        frames = encode(Message(Header.new(msg_type, raw.session)), raw.key)
        raw.sock.send_multipart([DELIMITER, signature, *frames[2:]])
    elif kind == "content":
        raw.send("generate", {**data, "batch_size": "bad"})  # at least one bad field: never runs a job
    else:
        header = Header(uuid.uuid4().hex, "ping", raw.session, Header.new("ping", "s").date, data)
        raw.send("ping", header=header)
    reply = raw.recv()
    assert reply.content["status"] == "error" and reply.content["code"] in EXPECTED[kind], (case, reply.content)
    assert reply.msg_type.endswith("_reply") or reply.msg_type == "error"


def test_the_engine_still_serves_after_refusals(raw):
    assert raw.call("status").content["status"] == "ok"


def test_signed_messages_with_broken_maps_name_the_part(raw):
    parts = [packb({"msg_id": "x"}), packb({}), packb({})]
    raw.sock.send_multipart([DELIMITER, sign(raw.key, parts), *parts])
    reply = raw.recv()
    assert reply.content["code"] == "bad_request" and reply.content["field"].startswith("header.")
    parts = [packb(Header.new("ping", raw.session).to_dict()), packb({}), b"\xc1"]
    raw.sock.send_multipart([DELIMITER, sign(raw.key, parts), *parts])
    assert raw.recv().content["field"] == "content"


def test_bad_jobs_fail_alone_with_a_field_named(engine, tmp_path):
    with EngineClient(engine.connection_file) as client:
        with pytest.raises(EngineError) as err:
            client.generate("x", model="no-such-model", duration=0.5)
        assert err.value.code == "unknown_model" and err.value.field == "content.model"
        with pytest.raises(EngineError) as err:
            client.variation(str(tmp_path / "missing.wav"), duration=0.5, steps=2)
        assert err.value.code == "bad_request" and "content.audio.path" in err.value.message
        source = np.zeros((2, 44100), np.float32)
        with pytest.raises(EngineError) as err:
            client.extend(source, duration=0.5, sample_rate=44100, steps=2)
        assert err.value.code == "bad_request" and "content.duration" in err.value.message
        with pytest.raises(EngineError) as err:
            client.inpaint(source, 0.8, 0.2, sample_rate=44100, steps=2)
        assert err.value.code == "bad_request"
        assert client.generate("fine", duration=0.25, steps=2, seed=1)[0].audio.shape == (2, 11025)


def wait_until(predicate, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def start_blocker(process, client) -> Raw:
    """A long job that is running (not just queued) when this returns."""
    blocker = Raw(process.info())
    blocker.send("generate", {"duration": 0.25, "steps": 1000, "request_id": "blocker"})
    wait_until(lambda: any(j["request_id"] == "blocker" and j.get("progress") for j in client.status()["running"]))
    return blocker


def test_compatible_requests_are_batched_into_one_call(engine):
    """While the worker is busy, four compatible requests queue; they then run as one batch."""
    with EngineClient(engine.connection_file) as client:
        blocker = start_blocker(engine, client)
        raws = [Raw(engine.info()) for _ in range(4)]
        for i, r in enumerate(raws):
            r.send("generate", {"prompt": f"p{i}", "duration": 0.25 + 0.05 * i, "seed": 10 + i, "steps": 2})
        wait_until(lambda: len(client.status()["queued"]) == 4)
        assert client.cancel("blocker")["state"] == "cancelled"
        assert blocker.recv().content["code"] == "cancelled"
        replies = [r.recv() for r in raws]
    for r in [blocker, *raws]:
        r.close()
    for i, reply in enumerate(replies):
        assert reply.content["batched"] == 4, reply.content
        (result,) = reply.content["results"]
        assert result["seed"] == 10 + i and result["params"]["prompt"] == f"p{i}"
        assert result["audio"]["frames"] == round((0.25 + 0.05 * i) * 44100)


# --- job queue, pool and worker, without sockets ---------------------------------------------------


def test_sigterm_mid_job_cancels_it_removes_the_file_and_exits_0(tmp_path):
    process = EngineProcess(tmp_path).start()
    try:
        with EngineClient(process.connection_file) as client:
            blocker = start_blocker(process, client)
        process.signal(signal.SIGTERM)
        assert blocker.recv().content["code"] == "cancelled"
        blocker.close()
        assert process.wait() == 0
        assert not process.connection_file.exists()
    finally:
        process.stop()


@pytest.mark.skipif(os.name != "posix", reason="ipc, the default on POSIX")
def test_shutdown_request_stops_the_engine_cleanly(tmp_path):
    process = EngineProcess(tmp_path).start()
    try:
        info = process.info()
        assert info.transport == "ipc" and info.request_endpoint.startswith("ipc://")
        for endpoint in (info.request_endpoint, info.event_endpoint):
            assert stat.S_IMODE(os.stat(endpoint[len("ipc://"):]).st_mode) == 0o600
        with EngineClient(process.connection_file) as client:
            (result,) = client.generate("over ipc", duration=0.25, steps=2, seed=3)
            assert result.audio.shape == (2, 11025)
            assert client.shutdown()["pid"] == info.pid
        assert process.wait() == 0
        assert not process.connection_file.exists()
        assert not os.path.exists(info.request_endpoint[len("ipc://"):])
    finally:
        process.stop()


def test_a_second_engine_on_a_live_connection_file_is_refused(engine):
    second = subprocess.run([sys.executable, "-m", "sa3_engine.cli.serve", "--connection-file",
                             str(engine.connection_file)], capture_output=True, text=True, timeout=120)
    assert second.returncode == 2 and "already running" in second.stderr
    assert engine.info().pid == engine.proc.pid


def test_a_non_loopback_address_needs_curve(tmp_path):
    run = subprocess.run([sys.executable, "-m", "sa3_engine.cli.serve", "--connection-file", str(tmp_path / "c.json"),
                          "--transport", "tcp", "--ip", "0.0.0.0"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "--curve" in run.stderr
    assert not (tmp_path / "c.json").exists()
    with pytest.raises(ValueError, match="--transport tcp"):  # ipc sockets are local files: an ip means nothing
        Engine(EngineConfig(transport="ipc", ip="0.0.0.0", curve=True,
                            connection_file=str(tmp_path / "c.json")))


def test_unknown_preload_models_and_transports_are_refused_before_binding(tmp_path):
    with pytest.raises(ProtocolError, match="no-such-model"):
        Engine(EngineConfig(models=["no-such-model"], connection_file=str(tmp_path / "c.json")))
    with pytest.raises(ValueError, match="transport"):
        Engine(EngineConfig(transport="udp", connection_file=str(tmp_path / "c.json")))


def test_variation_of_mono_audio_at_another_rate_lasts_as_long_as_the_source(engine):
    with EngineClient(engine.connection_file) as client:
        source = np.random.default_rng(0).uniform(-0.5, 0.5, (1, 8000)).astype(np.float32)
        (result,) = client.variation(source, sample_rate=16000, steps=2, seed=9)
    assert result.sample_rate == 44100 and result.audio.shape == (2, 22050)  # 0.5 s, stereo, model rate
    assert result.seed == 9


def test_job_failures_name_the_request_field_not_the_pipeline_argument():
    from sa3_engine.engine.jobs import _failure

    assert _failure(ValueError("mask_end: 9 s is beyond the audio")) == (
        "bad_request", "content.mask_end: 9 s is beyond the audio", "content.mask_end")
    assert _failure(ValueError("loras[1]: no such file")) == ("bad_request", "content.loras[1]: no such file",
                                                              "content.loras")
    assert _failure(ValueError("content.audio.path: unreadable"))[2] == "content.audio"
    assert _failure(ValueError("the moon is wrong")) == ("bad_request", "the moon is wrong", None)
    assert _failure(RuntimeError("boom"))[0] == "internal"


def test_source_jobs_run_the_pipelines_mode_methods_and_failures_name_request_fields():
    from sa3_engine.generation.pipeline import Pipeline

    pipeline = Pipeline.load("tiny-random")
    events = []
    worker = Worker(JobQueue(), ModelPool(lambda m: pipeline), lambda event, j, **f: events.append((event, j.request_id, f)))
    source = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 11025)).astype(np.float32)  # 0.25 s

    def source_job(rid, kind, **params):
        return Job(rid, kind, "S", Header.new(kind, "S"), "m", params={"steps": 2, "seed": 3, **params},
                   audio=(44100, source))

    for j in [source_job("inpaint", "inpaint", mask_start=[0.05, 0.15], mask_end=[0.1, 0.2]),
              source_job("extend", "extend", duration=0.4),
              source_job("variation", "variation", init_noise_level=0.5),
              source_job("short", "extend", duration=0.2),
              source_job("outside", "inpaint", mask_start=0.1, mask_end=0.3)]:
        worker._run([j])
    outcome = {rid: (event, f) for event, rid, f in events if event in ("finished", "failed")}
    expected = {"inpaint": pipeline.inpaint(source, 44100, [(0.05, 0.1), (0.15, 0.2)], steps=2, seed=3),
                "extend": pipeline.extend(source, 44100, 0.4, steps=2, seed=3),
                "variation": pipeline.variation(source, 44100, init_noise_level=0.5, steps=2, seed=3)}
    for rid, (generation,) in expected.items():
        event, fields = outcome[rid]
        assert event == "finished", fields
        audio = np.frombuffer(fields["buffers"][0], "<f4").reshape(generation.audio.shape)
        np.testing.assert_array_equal(audio, generation.audio)
    assert outcome["short"][1]["field"] == "content.duration"
    assert outcome["short"][1]["message"].startswith("content.duration: 0.2 s must be longer than the source")
    assert outcome["outside"][1]["field"] == "content.mask_end"


# --- limits against heavy or hostile use, on an engine in this process with a stand-in pipeline ---------


def test_engine_output_is_readable_after_stop_and_the_engine_stops_when_its_parent_dies(tmp_path):
    process = EngineProcess(tmp_path, models=()).start()
    process.stop()
    assert "engine stopped" in process.output()
    (tmp_path / "orphan").mkdir()
    parent = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from bridge.spawn import EngineProcess; "
        "EngineProcess(Path(sys.argv[1]), models=()).start(); print('up', flush=True); time.sleep(120)"),
        str(tmp_path / "orphan")], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline().strip() == "up"
        orphan = tmp_path / "orphan" / "engine.json"
        info = connection.read(orphan)
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: not orphan.exists(), timeout=30)  # it noticed, and stopped cleanly
    wait_until(lambda: connection.engine_alive(orphan, info) is False, timeout=30)


def test_subscriptions_are_tiny_and_topics_over_64_bytes_are_ignored(engine, raw):
    info = engine.info()
    context = zmq.Context()
    try:
        subs = {}
        for name, topic in {"long": b"x" * 65, "huge": b"y" * 10_000, "fits": b"z" * 64}.items():
            subs[name] = context.socket(zmq.SUB)
            subs[name].setsockopt(zmq.SUBSCRIBE, topic)
            subs[name].connect(info.event_endpoint)
        assert subs["fits"].poll(20_000), "no welcome"
        welcome = decode(split_routing(subs["fits"].recv_multipart())[1], info.key_bytes)
        assert welcome.msg_type == "welcome" and welcome.content["topic"] == "z" * 64
        assert not subs["long"].poll(1000) and not subs["huge"].poll(0)  # no welcome: never subscribed
    finally:
        context.destroy(linger=0)
    assert raw.call("ping").content["status"] == "ok"
