"""What docs/protocol.md promises and the engine once did otherwise (issue 8, defects 11, 12 and 16): each
checked on a real engine process on the tiny random model, over the raw wire."""

import os
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from test_engine import Raw

from bridge.protocol import Header
from bridge.spawn import EngineProcess

DOC = open(os.path.join(os.path.dirname(__file__), "..", "docs", "protocol.md")).read()


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("contract")) as process:
        yield process


@pytest.fixture
def client(engine):
    c = Raw(engine.info(), subscribe=True)
    yield c
    c.close()


def events_until(client: Raw, request_id: str, last=("done", "error", "cancelled")) -> list:
    """Events of this client's session up to the end of ``request_id``; every other job's too."""
    seen = []
    while not seen or seen[-1].content.get("request_id") != request_id or seen[-1].msg_type not in last:
        seen.append(client.event())
    return seen


def refused_at_once(client: Raw, msg_type: str, content: dict, field: str, buffers=()) -> dict:
    """A ``bad_request`` naming ``field``, before any job: no request id, and no event ever published."""
    reply = client.call(msg_type, content, buffers).content
    assert reply["status"] == "error" and reply["code"] == "bad_request", (content, reply)
    assert reply.get("field") == field and "request_id" not in reply, (content, reply)
    return reply


def no_events_for(client: Raw, request_ids: set) -> None:
    """Runs a marker job to its end: no event seen before it belongs to ``request_ids``."""
    marker = f"marker-{uuid.uuid4().hex}"
    client.send("generate", {"request_id": marker, "duration": 0.1, "steps": 1})
    assert client.recv().content["status"] == "ok"
    leaked = [e.msg_type for e in events_until(client, marker) if e.content.get("request_id") in request_ids]
    assert leaked == []


# --- defect 11 -------------------------------------------------------------------------------------------


def test_an_idle_engine_still_publishes_queued_at_position_0_right_after_accepted(client):
    for i in range(30):  # the worker takes a job the moment it is queued: every one must still be announced
        request_id = f"idle-{i}-{uuid.uuid4().hex}"
        client.send("generate", {"request_id": request_id, "duration": 0.1, "steps": 1})
        assert client.recv().content["status"] == "ok"
        kinds = [(e.msg_type, e.content.get("position")) for e in events_until(client, request_id)]
        assert kinds[:2] == [("accepted", None), ("queued", 0)], kinds


# --- defect 12 -------------------------------------------------------------------------------------------


def test_nul_bytes_empty_models_and_huge_durations_are_bad_requests_before_any_job(client, tmp_path):
    ids = {f"r{i}-{uuid.uuid4().hex}" for i in range(6)}
    rid = iter(sorted(ids))
    refused_at_once(client, "generate", {"request_id": next(rid), "model": "tiny\x00random"}, "content.model")
    refused_at_once(client, "generate", {"request_id": next(rid), "output_dir": f"{tmp_path}/a\x00b"},
                    "content.output_dir")
    refused_at_once(client, "variation", {"request_id": next(rid), "audio": {"path": f"{tmp_path}/a\x00.wav"}},
                    "content.audio.path")
    refused_at_once(client, "generate", {"request_id": next(rid), "loras": [["/a\x00b", 1.0]]}, "content.loras")
    refused_at_once(client, "generate", {"request_id": next(rid), "duration": 5e303}, "content.duration")
    refused_at_once(client, "generate", {"request_id": next(rid), "model": ""}, "content.model")
    for kind in ("load", "unload"):  # "" is no model, not the default one
        refused_at_once(client, kind, {"model": ""}, "content.model")
    status = client.call("status").content
    assert [m["model"] for m in status["models"]] == ["tiny-random"]  # unload "" unloaded nothing
    no_events_for(client, ids)


# --- defect 16 -------------------------------------------------------------------------------------------


def test_the_wire_caps_durations_where_the_pipeline_does():
    from bridge.protocol import MAX_DURATION_S
    from sa3_engine.generation.pipeline import MAX_DURATION_SECONDS, MAX_INPUT_SECONDS

    assert MAX_DURATION_S == MAX_DURATION_SECONDS == MAX_INPUT_SECONDS == 1800  # one cap, the documented one


def test_durations_over_the_documented_1800_s_cap_are_refused_before_any_job(client):
    assert "| `duration` | number 0.01..1800 |" in DOC
    rid = f"long-{uuid.uuid4().hex}"
    refused_at_once(client, "generate", {"request_id": rid, "duration": 1800.01}, "content.duration")
    source = np.zeros((1, 1000), np.float32)
    audio = {"buffer": 0, "sample_rate": 1000, "channels": 1, "frames": 1000}
    refused_at_once(client, "extend", {"audio": audio, "duration": 1801}, "content.duration", [source.tobytes()])
    no_events_for(client, {rid})


def test_audio_below_the_documented_1000_hz_floor_is_refused_before_any_job(client):
    assert "| `sample_rate` | int | 1000..768000 Hz |" in DOC
    source = np.zeros((1, 999), np.float32)
    audio = {"buffer": 0, "sample_rate": 999, "channels": 1, "frames": 999}
    refused_at_once(client, "variation", {"audio": audio, "steps": 1}, "content.audio", [source.tobytes()])
    ok = client.call("variation", {"audio": {**audio, "sample_rate": 1000}, "steps": 1, "duration": 1.0},
                     [source.tobytes()]).content
    assert ok["status"] == "ok", ok


def test_a_variation_shorter_than_its_source_is_refused_before_any_job(client):
    assert "not shorter than the source" in DOC
    source = np.zeros((2, 4410), np.float32)  # 0.1 s
    audio = {"buffer": 0, "sample_rate": 44100, "channels": 2, "frames": 4410}
    refused_at_once(client, "variation", {"audio": audio, "duration": 0.05}, "content.duration", [source.tobytes()])
    ok = client.call("variation", {"audio": audio, "duration": 0.1, "steps": 1}, [source.tobytes()]).content
    assert ok["status"] == "ok" and ok["results"][0]["audio"]["frames"] == 4410, ok


def test_an_unknown_field_is_refused_even_when_nil(client):
    assert "even when nil" in DOC
    refused_at_once(client, "ping", {"bogus": None}, "content.bogus")
    refused_at_once(client, "generate", {"duration": 0.1, "stpes": None}, "content.stpes")
    assert client.call("ping", {}).content["status"] == "ok"


@pytest.mark.parametrize("version", ["2", "2.x", "2.0.1", "2.0 ", "02.0", "٢.0"])
def test_a_version_that_is_not_major_dot_minor_is_refused(client, version):
    assert "two decimal numbers" in DOC
    header = Header(uuid.uuid4().hex, "ping", client.session, Header.new("ping", "s").date, version)
    client.send("ping", header=header)
    reply = client.recv().content
    assert reply["code"] == "unsupported_version" and reply["field"] == "header.version", (version, reply)


def test_date_offsets_are_rfc_3339_hours_and_minutes(client):
    assert "`+HH:MM`/`-HH:MM` (hours 00-23, minutes 00-59" in DOC
    now = datetime.now(UTC)

    def ping_at(offset: timedelta, text: str) -> dict:
        local = (now + offset).strftime("%Y-%m-%dT%H:%M:%S.%f") + text
        client.send("ping", header=Header(uuid.uuid4().hex, "ping", client.session, local))
        return client.recv().content

    assert ping_at(timedelta(hours=5, minutes=30), "+05:30")["status"] == "ok"
    assert ping_at(timedelta(), "-00:00")["status"] == "ok"
    assert ping_at(timedelta(hours=-23, minutes=-59), "-23:59")["status"] == "ok"
    for text, offset in [("+05:60", timedelta(hours=6)), ("+05:99", timedelta(hours=6, minutes=39)),
                         ("+24:00", timedelta(hours=24))]:
        reply = ping_at(offset, text)
        assert reply.get("code") == "bad_request" and reply["field"] == "header.date", (text, reply)


def test_buffers_no_audio_map_refers_to_are_refused(client):
    assert "a buffer no audio map refers to" in DOC
    reply = client.call("ping", {}, [b"\0" * 8]).content
    assert reply["code"] == "bad_request" and reply["field"] == "buffers", reply
    source = np.zeros((2, 441), np.float32)
    audio = {"buffer": 0, "sample_rate": 44100, "channels": 2, "frames": 441}
    refused_at_once(client, "variation", {"audio": audio, "steps": 1}, "buffers", [source.tobytes()] * 2)
    refused_at_once(client, "variation", {"audio": {"path": "/nowhere.wav"}}, "buffers", [source.tobytes()])


@pytest.mark.skipif(os.name != "posix", reason="folder modes")
def test_a_connection_file_elsewhere_needs_a_folder_only_this_user_can_write(tmp_path):
    assert "others can write to" in DOC
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    try:
        run = subprocess.run([sys.executable, "-m", "sa3_engine.cli.serve", "--connection-file",
                              str(shared / "engine.json")], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("the engine served from a folder others can write to")
    assert run.returncode == 2 and "others can write" in run.stderr, run.stderr
    assert not (shared / "engine.json").exists() and os.listdir(shared) == []
    readable = tmp_path / "readable"
    readable.mkdir()
    os.chmod(readable, 0o755)
    created = tmp_path / "new" / "deeper"
    for folder in (readable, created):
        with EngineProcess(tmp_path, models=(), connection_file=folder / "engine.json") as process:
            info = process.info()
            for endpoint in (info.request_endpoint, info.event_endpoint):
                assert stat.S_IMODE(os.stat(endpoint[len("ipc://"):]).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(readable).st_mode) == 0o755  # an existing folder keeps its mode
    assert stat.S_IMODE(os.stat(created).st_mode) == 0o700  # a new one is user-only
