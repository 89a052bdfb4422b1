"""EngineClient against a real engine process: every call, progress, many clients, cancel, results kept,
engine death and restart; and the connection file it finds the engine by."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from bridge import connection
from bridge.client import EngineClient, EngineError, EngineLost, EngineNotRunning
from bridge.protocol import Limits
from bridge.spawn import EngineProcess
from sa3_engine.audio import read_audio, write_wav
from sa3_engine.cli.engine import format_status
from sa3_engine.runtime.device import native_bf16_cpu


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("client")) as process:
        yield process


@pytest.fixture
def client(engine):
    with EngineClient(engine.connection_file) as c:
        yield c


def test_hello_models_ping_and_status(client, engine):
    hello = client.hello()
    assert hello["protocol_version"] == "2.0" and hello["pid"] == engine.proc.pid
    auto = ("fast", "bfloat16") if native_bf16_cpu() else ("fp32", "float32")  # `sa3 serve`'s default precision
    assert hello["device"]["device"] == "cpu" and (hello["precision"], hello["dtype"]) == auto
    assert hello["default_model"] == "tiny-random" and "generate" in hello["requests"]
    models = client.models()
    tiny = next(m for m in models["available"] if m["id"] == "tiny-random")
    assert tiny["found"] and tiny["kind"] == "dit"
    assert client.ping() > 0
    status = client.status()
    assert status["pid"] == engine.proc.pid and not status["stopping"] and status["precision"] == auto[0]
    assert "tiny-random" in format_status(status)


def test_load_and_unload_round_trip(client):
    client.generate("warm up", duration=0.25, steps=1)  # the preload has finished once this returns
    assert [m["model"] for m in client.load("tiny-random")["models"]] == ["tiny-random"]
    loaded = client.status()["models"][0]
    assert loaded["sample_rate"] == 44100 and loaded["bytes"] > 0
    assert client.unload("tiny-random")["unloaded"] is True
    assert client.status()["models"] == [] and client.unload("tiny-random")["unloaded"] is False
    (result,) = client.generate("loads again on demand", duration=0.25, steps=1, seed=2)
    assert result.audio.shape == (2, 11025)
    assert [m["model"] for m in client.status()["models"]] == ["tiny-random"]


def test_generate_returns_audio_and_reports_progress_in_order(client):
    events = []
    results = client.generate("bass", duration=0.5, steps=3, seed=11, batch_size=2, on_progress=events.append)
    assert [r.seed for r in results][0] == 11 and len({r.seed for r in results}) == 2
    for r in results:
        assert r.audio.shape == (2, 22050) and r.audio.dtype == np.float32 and r.audio.flags.writeable
        assert r.sample_rate == 44100 and r.params["prompt"] == "bass" and r.path is None
        assert np.isfinite(r.audio).all() and np.abs(r.audio).max() <= 1.0
    kinds = [e["event"] for e in events]  # "done" may come after the reply: events are informational
    assert kinds[0] == "accepted" and "progress" in kinds and not {"error", "cancelled"} & set(kinds)
    assert {e["request_id"] for e in events} == {events[0]["request_id"]}
    sample_steps = [e["i"] for e in events if e["event"] == "progress" and e["stage"] == "sample"]
    assert sample_steps == sorted(sample_steps) and sample_steps[-1] == 3


def test_same_seed_and_prompt_give_the_same_audio(client):
    (a,) = client.generate("same", duration=0.25, steps=2, seed=123)
    (b,) = client.generate("same", duration=0.25, steps=2, seed=123)
    np.testing.assert_array_equal(a.audio, b.audio)


def test_inpaint_extend_and_variation_round_trip(client, tmp_path):
    rng = np.random.default_rng(1)
    source = rng.uniform(-0.5, 0.5, (2, 44100)).astype(np.float32)
    before = source.copy()
    (inpainted,) = client.inpaint(source, 0.25, 0.5, "fill", sample_rate=44100, steps=2, seed=1)
    assert inpainted.audio.shape == (2, 44100)
    np.testing.assert_array_equal(inpainted.audio[:, :8000], source[:, :8000])  # kept audio is spliced back
    (extended,) = client.extend(source, 1.5, "more", sample_rate=44100, steps=2, seed=1)
    assert extended.audio.shape == (2, 66150)
    np.testing.assert_array_equal(extended.audio[:, :40000], source[:, :40000])
    path = write_wav(tmp_path / "source.wav", source, 44100, bit_depth="float")
    (varied,) = client.variation(str(path), "vary", init_noise_level=0.5, steps=2, seed=1)
    assert varied.audio.shape == (2, 44100)
    np.testing.assert_array_equal(source, before)  # the caller's audio is never touched


def test_output_dir_makes_the_engine_write_wav_files(client, tmp_path):
    (result,) = client.generate("to disk", duration=0.25, steps=2, seed=4, output_dir=str(tmp_path),
                                request_id="disk-1")
    assert result.audio is None and result.path == str(tmp_path / "disk-1-0.wav")
    audio, rate = read_audio(result.path)
    assert rate == 44100 and audio.shape == (2, 11025)
    with pytest.raises(EngineError) as err:
        client.generate("x", duration=0.25, output_dir="relative/dir")
    assert err.value.field == "content.output_dir"


def test_an_output_dir_the_engine_cannot_create_is_refused_before_computing(client, tmp_path):
    (tmp_path / "a-file").write_text("not a folder")
    events = []
    with pytest.raises(EngineError) as err:
        client.generate("x", duration=0.25, steps=2, output_dir=str(tmp_path / "a-file" / "clips"),
                        on_progress=events.append)
    assert (err.value.code, err.value.field) == ("bad_request", "content.output_dir")
    assert events == []  # refused: no job was created
    (made,) = client.generate("x", duration=0.25, steps=2, output_dir=str(tmp_path / "new" / "clips"))
    assert made.path == str(tmp_path / "new" / "clips" / os.path.basename(made.path))


def test_results_that_cannot_be_written_fail_naming_output_dir(tmp_path):
    from types import SimpleNamespace

    from bridge.protocol import Header
    from sa3_engine.engine.jobs import Job, JobError, _results

    (tmp_path / "gone").write_text("a file where the folder was")
    job = Job("r", "generate", "S", Header.new("generate", "S"), "m", output_dir=str(tmp_path / "gone"))
    clip = SimpleNamespace(audio=np.zeros((2, 10), np.float32), sample_rate=44100, seed=1, params={}, timings={})
    with pytest.raises(JobError) as err:
        _results(job, [clip], 1)
    assert (err.value.code, err.value.field) == ("bad_request", "content.output_dir")


def test_results_are_kept_and_a_resubmission_does_not_run_twice(client):
    (first,) = client.generate("keep", duration=0.25, steps=2, request_id="kept-1")
    retained = client.status()["retained"]
    (again,) = client.result("kept-1")
    (resubmitted,) = client.generate("ignored: same id", duration=1.0, request_id="kept-1")
    np.testing.assert_array_equal(first.audio, again.audio)
    np.testing.assert_array_equal(first.audio, resubmitted.audio)
    assert client.status()["retained"] == retained
    with pytest.raises(EngineError) as err:
        client.result("never-submitted")
    assert err.value.code == "unknown_request"


def test_result_without_wait_says_not_ready_while_running(client, engine):
    with EngineClient(engine.connection_file) as other:
        rid = other.submit("generate", {"duration": 0.25, "steps": 1000})
        deadline = time.monotonic() + 60
        while not client.status()["running"]:
            assert time.monotonic() < deadline
        with pytest.raises(EngineError) as err:
            client.result(rid, wait=False)
        assert err.value.code == "not_ready"
        assert client.cancel(rid)["state"] == "cancelled"
        with pytest.raises(EngineError) as err:
            other.wait(rid)
        assert err.value.code == "cancelled"
        assert client.cancel(rid)["state"] == "cancelled"  # cancelling again just reports the state


def test_cancel_from_the_progress_callback_stops_the_job(client):
    def on_progress(event):
        if event["event"] == "progress":
            client.cancel(event["request_id"])

    with pytest.raises(EngineError) as err:
        client.generate("stop me", duration=0.25, steps=1000, request_id="cancel-me", on_progress=on_progress)
    assert err.value.code == "cancelled"
    assert client.status()["running"] == []
    assert client.generate("next", duration=0.25, steps=1)[0].audio.shape == (2, 11025)


def test_eight_clients_at_once_all_get_their_own_results(engine):
    outcomes, errors = {}, []

    def one(i):
        try:
            with EngineClient(engine.connection_file) as c:
                (r,) = c.generate(f"clip {i}", duration=0.2 + 0.01 * i, steps=2, seed=100 + i)
                outcomes[i] = r
        except Exception as exc:  # reported below; a thread must not swallow it
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and sorted(outcomes) == list(range(8))
    for i, r in outcomes.items():
        assert r.seed == 100 + i and r.params["prompt"] == f"clip {i}"
        assert r.audio.shape == (2, round((0.2 + 0.01 * i) * 44100))
    with EngineClient(engine.connection_file) as c:
        (solo,) = c.generate("clip 3", duration=0.23, steps=2, seed=103)
    np.testing.assert_allclose(outcomes[3].audio, solo.audio, atol=1e-4)  # batching does not change results


def test_a_reply_this_client_cannot_read_ends_the_wait_with_an_error(engine):
    with EngineClient(engine.connection_file, limits=Limits(max_part_bytes=200)) as c:  # status content is larger
        with pytest.raises(EngineError) as err:
            c.status()
        assert err.value.code == "too_large" and err.value.field == "content" and "could not be read" in err.value.message
        assert c.ping() > 0


def test_no_engine_and_a_stale_connection_file_name_the_path(tmp_path):
    missing = tmp_path / "none.json"
    with pytest.raises(EngineNotRunning, match=str(missing)):
        with EngineClient(missing) as c:
            c.ping()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / "stale.json"
    connection.write(connection.ConnectionInfo("tcp", "127.0.0.1", "tcp://127.0.0.1:9", "tcp://127.0.0.1:10",
                                               connection.new_key(), dead.pid, socket.gethostname()), stale)
    with pytest.raises(EngineNotRunning, match=f"{dead.pid} has exited.*{stale}"):
        with EngineClient(stale) as c:
            c.ping()


def unlocked_file(path, pid, lock: bool):
    """A connection file naming ``pid`` and ports nothing listens on, as a killed engine leaves it."""
    connection.write(connection.ConnectionInfo("tcp", "127.0.0.1", "tcp://127.0.0.1:9", "tcp://127.0.0.1:10",
                                               connection.new_key(), pid, socket.gethostname()), path)
    if lock:  # an engine of this version made its lock file, now unlocked since it died
        connection.lock_path(path).touch()
    return path


@pytest.mark.skipif(os.name != "posix", reason="the engine lock is an flock")
def test_a_stale_file_naming_a_reused_pid_is_not_running_at_once(tmp_path):
    stale = unlocked_file(tmp_path / "engine.json", os.getpid(), lock=True)  # the pid is alive: this process
    started = time.monotonic()
    with pytest.raises(EngineNotRunning, match="has exited"):
        with EngineClient(stale) as c:
            c.ping()
    assert time.monotonic() - started < 5  # the lock says so: no connection attempt is waited out


def test_an_engine_nothing_answers_for_is_not_running_after_the_grace(tmp_path):
    stale = unlocked_file(tmp_path / "engine.json", os.getpid(), lock=False)  # no lock file: only the pid
    started = time.monotonic()
    with pytest.raises(EngineNotRunning, match="nothing accepts connections"):
        with EngineClient(stale, reconnect_grace_s=0.5) as c:
            c.ping()
    assert time.monotonic() - started < 5  # not the 30 s of timeouts and retries


@pytest.mark.skipif(os.name != "posix", reason="POSIX permissions")
def test_connection_files_others_can_read_are_refused_and_the_runtime_folder_is_made_private(tmp_path, monkeypatch):
    path = connection.write(info(), tmp_path / "engine.json")
    os.chmod(path, 0o644)
    with pytest.raises(ValueError, match="0644"):
        connection.read(path)
    with pytest.raises(EngineNotRunning, match="0644"):
        with EngineClient(path) as c:
            c.ping()
    (tmp_path / "run" / "sa3").mkdir(parents=True, mode=0o755)
    os.chmod(tmp_path / "run" / "sa3", 0o755)  # whatever the umask
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert stat.S_IMODE(os.stat(connection.runtime_dir()).st_mode) == 0o700


def test_engine_status_command(engine, capsys):
    import argparse

    from sa3_engine.cli.engine import add_arguments, run

    parser = argparse.ArgumentParser()
    add_arguments(parser, "engine")
    assert run(parser.parse_args(["status", "--connection-file", str(engine.connection_file), "--json"])) == 0
    assert json.loads(capsys.readouterr().out)["pid"] == engine.proc.pid
    assert run(parser.parse_args(["status", "--connection-file", str(engine.connection_file) + ".x"])) == 1
    assert "no engine is running" in capsys.readouterr().err


def test_kill_9_mid_job_is_reported_quickly_and_the_client_reconnects_after_restart(tmp_path):
    process = EngineProcess(tmp_path).start()
    try:
        with EngineClient(process.connection_file) as c:
            killed_at = []

            def kill_on_progress(event):
                if event["event"] == "progress" and not killed_at:
                    process.signal(signal.SIGKILL)
                    killed_at.append(time.monotonic())

            with pytest.raises(EngineLost):
                c.generate("doomed", duration=0.25, steps=1000, on_progress=kill_on_progress)
            assert time.monotonic() - killed_at[0] < 2.0
            process.wait()
            with pytest.raises(EngineNotRunning, match="has exited"):
                c.ping()  # the file left behind names a dead process
            process.start()
            assert c.hello()["pid"] == process.proc.pid
            assert c.generate("alive", duration=0.25, steps=1)[0].audio.shape == (2, 11025)
    finally:
        process.stop()


def test_a_waiting_generation_is_resubmitted_to_a_restarted_engine(tmp_path):
    process = EngineProcess(tmp_path).start()
    try:
        with EngineClient(process.connection_file, reconnect_grace_s=120) as c:
            restarted = threading.Event()

            def restart_on_progress(event):
                if event["event"] == "progress" and not restarted.is_set():
                    restarted.set()
                    process.signal(signal.SIGKILL)
                    process.wait()
                    process.start(wait=False)

            (result,) = c.generate("survivor", duration=0.25, steps=3, seed=8, request_id="survivor",
                                   on_progress=restart_on_progress)
            assert result.seed == 8 and c.hello()["pid"] == process.proc.pid
    finally:
        process.stop()


# --- the connection file ---------------------------------------------------------------------------


def info(**changes):
    fields = dict(transport="tcp", ip="127.0.0.1", request_endpoint="tcp://127.0.0.1:1",
                  event_endpoint="tcp://127.0.0.1:2", key=connection.new_key(), pid=os.getpid(),
                  hostname=socket.gethostname())
    return connection.ConnectionInfo(**{**fields, **changes})


def test_connection_file_round_trip_is_private_and_atomic(tmp_path):
    path = connection.write(info(), tmp_path / "sub" / "engine.json")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert connection.read(path) == info(key=connection.read(path).key)
    assert [p.name for p in path.parent.iterdir()] == ["engine.json"]  # no temp file left
    data = json.loads(path.read_text())
    assert data["signature_scheme"] == "hmac-sha256" and data["protocol_version"] == "2.0"
    assert connection.read(path).process_alive() is True


@pytest.mark.parametrize("change, words", [({"pid": "12"}, "'pid'"), ({"transport": "udp"}, "transport"),
                                           ({"signature_scheme": "md5"}, "signature_scheme")])
def test_bad_connection_files_name_the_field(tmp_path, change, words):
    path = connection.write(info(), tmp_path / "engine.json")
    path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
    with pytest.raises(ValueError, match=words):
        connection.read(path)


def test_remove_leaves_a_file_written_by_another_engine(tmp_path):
    path = connection.write(info(pid=os.getpid() + 1), tmp_path / "engine.json")
    connection.remove(path, os.getpid())
    assert path.exists()
    connection.remove(path, os.getpid() + 1)
    assert not path.exists()


def test_default_path_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(connection.CONNECTION_ENV, str(tmp_path / "x.json"))
    assert connection.default_path() == tmp_path / "x.json"
    monkeypatch.delenv(connection.CONNECTION_ENV)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    assert connection.default_path() == tmp_path / "run" / "sa3" / "engine.json"
    assert stat.S_IMODE(os.stat(tmp_path / "run" / "sa3").st_mode) == 0o700
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert connection.default_path() == tmp_path / "home" / ".local" / "share" / "sa3" / "runtime" / "engine.json"
