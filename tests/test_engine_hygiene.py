"""What an engine leaves behind and lets others do to it (issue 8, defects 13 to 15): its log, its files
after a crash or a signal, its memory under a client that never reads. Real engine processes, tiny model."""

import os
import re
import signal
import uuid

import pytest
import zmq
from test_engine import Raw, wait_until

from bridge import connection
from bridge.client import EngineClient, EngineError
from bridge.protocol import DELIMITER, Header, Message, encode
from bridge.spawn import EngineProcess

LOG_LINE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2},\d{3} sa3-engine [A-Z]+ ")


# --- defect 13 -------------------------------------------------------------------------------------------


def test_header_and_field_strings_cannot_forge_log_lines(tmp_path):
    forged = "2026-01-01 00:00:00,000 sa3-engine INFO FORGED"
    with EngineProcess(tmp_path, models=()) as engine:
        client = Raw(engine.info())
        try:
            for breaker in ("\n", "\r", "\u2028", "\x85", "\x1e"):
                # unsigned: anyone who can connect gets this far, without the key
                header = Header(uuid.uuid4().hex, f"ping{breaker}{forged}", f"s{breaker}{forged}",
                                Header.new("ping", "s").date)
                frames = encode(Message(header), client.key)
                client.sock.send_multipart([DELIMITER, b"0" * 64, *frames[2:]])
                assert client.recv().content["code"] == "bad_signature"
                # signed: a field name is client text too
                assert client.call("ping", {f"x{breaker}{forged}": 1}).content["code"] == "bad_request"
        finally:
            client.close()
    log = engine.output()
    assert "FORGED" in log  # logged, escaped
    for line in log.splitlines():  # Python splits lines as log viewers do: \r, \u2028, \x85, \x1e too
        assert LOG_LINE.match(line) and not line.startswith(forged[:23]), f"a line the engine did not write: {line!r}"


# --- defect 14 -------------------------------------------------------------------------------------------


def socket_files(info: connection.ConnectionInfo) -> list[str]:
    return [endpoint[len("ipc://"):] for endpoint in (info.request_endpoint, info.event_endpoint)]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals, ipc sockets")
@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT])
def test_sighup_and_sigquit_stop_the_engine_cleanly(tmp_path, signum):
    process = EngineProcess(tmp_path, models=()).start()
    try:
        info = process.info()
        process.signal(signum)
        assert process.wait() == 0
        assert "engine stopped" in process.output()
        assert not process.connection_file.exists()
        assert not any(os.path.exists(path) for path in socket_files(info))
    finally:
        process.stop()


@pytest.mark.skipif(os.name != "posix", reason="the engine lock is an flock; ipc sockets")
def test_a_new_engine_removes_what_a_killed_one_left_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    with EngineProcess(tmp_path, models=(), connection_file=tmp_path / "other.json") as bystander:
        engine = EngineProcess(tmp_path).start()
        try:
            killed = engine.info()
            client = Raw(killed)
            client.send("generate", {"duration": 60.0, "steps": 1, "output_dir": str(out), "request_id": "long"})
            # the clip is being written (a second or so): kill the engine right then
            wait_until(lambda: out.exists() and any(name.startswith(".") for name in os.listdir(out)), timeout=120)
            engine.proc.kill()
            engine.proc.wait()
            client.close()
            assert [name for name in os.listdir(out) if name.startswith(".")]  # what kill -9 leaves
            assert all(os.path.exists(path) for path in socket_files(killed))
            engine.start()  # a new engine on the same connection file
            assert os.listdir(out) == []
            assert not any(os.path.exists(path) for path in socket_files(killed))
            assert all(os.path.exists(path) for path in socket_files(bystander.info()))  # a live engine's: kept
            with EngineClient(bystander.connection_file) as other:
                assert other.ping() > 0
        finally:
            engine.stop()


# --- defect 15 -------------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def finished(client: EngineClient, request_id: str) -> bool:
    try:
        client.result(request_id, wait=False)
        return True
    except EngineError as exc:
        assert exc.code in ("not_ready", "unknown_request"), exc  # still running, or not received yet
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads the engine's RSS from /proc")
def test_replies_a_client_never_reads_hold_no_more_than_the_retention_budget(tmp_path, monkeypatch):
    # glibc returns freed blocks of 64 KiB or more to the system at once, so RSS counts live memory only
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    budget, clip = 4 << 20, 2 * 88200 * 4  # 2 s of stereo float32: 705600 bytes a reply
    jobs = 80  # 56 MB of replies, 14 times the budget
    # one job per pipeline call: a batch's working memory would count as growth and is not what is measured
    with EngineProcess(tmp_path, "--retention-mb", str(budget >> 20), "--max-batch", "1") as engine:
        with EngineClient(engine.connection_file) as watcher:
            watcher.generate("warm", duration=2.0, steps=1)  # every allocation of such a job made once
            before = rss_bytes(engine.proc.pid)
            stuck = Raw(engine.info())
            try:
                stuck.sock.setsockopt(zmq.RCVHWM, 1)  # takes one message, then leaves the rest to the engine
                stuck.sock.setsockopt(zmq.RCVBUF, 4096)
                for i in range(jobs):  # a session each, so the per-session queue limit does not refuse them
                    stuck.send("generate", {"duration": 2.0, "steps": 1, "request_id": f"unread-{i}"},
                               header=Header.new("generate", uuid.uuid4().hex))
                # requests are taken in order: once the last has ended, every one has
                wait_until(lambda: finished(watcher, f"unread-{jobs - 1}"), timeout=600)
                grown = rss_bytes(engine.proc.pid) - before
                assert grown < 5 * budget, f"the engine grew by {grown >> 20} MiB for replies nobody reads"
                # what was not sent can be fetched: the most recent results are still retained
                (fetched,) = watcher.result(f"unread-{jobs - 1}")
                assert fetched.audio.nbytes == clip
            finally:
                stuck.close()
