"""docs/protocol.md is a complete contract: a client written from that page alone, against a real engine.

Nothing here comes from bridge.protocol, bridge.client or bridge.connection (bridge.spawn only starts
the engine): every byte is built and checked as the document describes it.
"""

import hashlib
import hmac
import json
import os
import secrets
import stat
from datetime import UTC, datetime, timedelta

import msgpack
import numpy as np
import pytest
import zmq

from bridge.spawn import EngineProcess

DELIMITER = b"<SA3|MSG>"
VERSION = "2.0"
TIMEOUT_MS = 20_000


def sign(key: bytes, parts: list[bytes]) -> bytes:
    """Section 3: HMAC-SHA256 over each part after the signature, each preceded by its 8-byte length."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        mac.update(len(part).to_bytes(8, "big"))
        mac.update(part)
    return mac.hexdigest().encode("ascii")


def rfc3339(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def planar(audio: np.ndarray) -> bytes:
    """Section 8: (channels, frames) float32 as planar little-endian bytes."""
    return np.ascontiguousarray(audio, dtype="<f4").tobytes()


def unplanar(buffer: bytes, audio_map: dict) -> np.ndarray:
    assert len(buffer) == audio_map["channels"] * audio_map["frames"] * 4
    return np.frombuffer(buffer, dtype="<f4").reshape(audio_map["channels"], audio_map["frames"])


class Message:
    def __init__(self, frames: list[bytes], key: bytes):
        at = frames.index(DELIMITER)
        self.routing = frames[:at]
        signature, *parts = frames[at + 1 :]
        assert hmac.compare_digest(signature, sign(key, parts)), "engine message signed wrongly"
        self.header, self.parent_header, self.content = (msgpack.unpackb(p) for p in parts[:3])
        self.buffers = parts[3:]


class DocClient:
    """A DEALER for requests and a SUB (on this client's session) for events; sections 1 to 3."""

    def __init__(self, connection_file):
        info = json.loads(connection_file.read_text())
        self.key = info["key"].encode("ascii")
        self.session = secrets.token_hex(16)
        self.context = zmq.Context()
        self.requests = self.context.socket(zmq.DEALER)
        self.requests.linger = 0
        self.requests.connect(info["request_endpoint"])
        self.events = self.context.socket(zmq.SUB)
        self.events.linger = 0
        self.events.connect(info["event_endpoint"])
        self.events.subscribe(self.session.encode())
        welcome = self.next_event()
        assert welcome.header["msg_type"] == "welcome" and welcome.content["topic"] == self.session
        self.pending: dict[str, Message] = {}

    def close(self):
        self.context.destroy(linger=0)

    def header(self, msg_type: str, **overrides) -> dict:
        header = {
            "msg_id": secrets.token_hex(16), "msg_type": msg_type, "session": self.session,
            "date": rfc3339(datetime.now(UTC)), "version": VERSION,
        }
        return header | overrides

    def send_frames(self, parts: list[bytes], signature: bytes | None = None) -> None:
        self.requests.send_multipart([DELIMITER, signature or sign(self.key, parts), *parts])

    def send(self, msg_type: str, content: dict | None = None, buffers=(), **header_fields) -> dict:
        header = self.header(msg_type, **header_fields)
        self.send_frames([msgpack.packb(header), msgpack.packb({}), msgpack.packb(content or {}), *buffers])
        return header

    def reply(self, header: dict | None) -> Message:
        """The reply whose parent is ``header`` (None: the next reply with an empty parent)."""
        wanted = header["msg_id"] if header else None
        while wanted not in self.pending:
            assert self.requests.poll(TIMEOUT_MS), "no reply from the engine"
            message = Message(self.requests.recv_multipart(), self.key)
            self.pending[message.parent_header.get("msg_id")] = message
        message = self.pending.pop(wanted)
        if header:
            assert message.parent_header == header
        assert message.header["session"] != self.session and message.header["version"] == VERSION
        return message

    def request(self, msg_type: str, content: dict | None = None, buffers=()) -> Message:
        return self.reply(self.send(msg_type, content, buffers))

    def next_event(self) -> Message:
        assert self.events.poll(TIMEOUT_MS), "no event from the engine"
        topic, *frames = self.events.recv_multipart()
        assert topic == self.session.encode()
        return Message(frames, self.key)

    def events_until(self, request_id: str, last: str) -> list[Message]:
        """Events of ``request_id`` up to and including the ``last`` event type."""
        seen = []
        while not seen or seen[-1].header["msg_type"] != last:
            event = self.next_event()
            if event.content.get("request_id") == request_id:
                seen.append(event)
        return seen


def ok(message: Message, msg_type: str) -> dict:
    assert message.header["msg_type"] == msg_type, message.content
    assert message.content["status"] == "ok", message.content
    return message.content


def refused(message: Message, msg_type: str, code: str) -> dict:
    assert message.header["msg_type"] == msg_type
    assert message.content["status"] == "error" and message.content["code"] == code, message.content
    assert isinstance(message.content["message"], str)
    return message.content


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with EngineProcess(tmp_path_factory.mktemp("protocol-doc")) as process:
        yield process


@pytest.fixture
def client(engine):
    c = DocClient(engine.connection_file)
    yield c
    c.close()


def test_worked_example_bytes_and_signature():
    header = {
        "msg_id": "8d1f0c2a9b3e4f5a6b7c8d9e0f1a2b3c", "msg_type": "ping",
        "session": "c0ffee00c0ffee00c0ffee00c0ffee00", "date": "2025-06-01T12:00:00.000000Z", "version": "2.0",
    }
    packed = msgpack.packb(header)
    assert len(packed) == 143 and packed.hex() == (
        "85a66d73675f6964d920386431663063326139623365346635613662376338643965306631613262"
        "3363a86d73675f74797065a470696e67a773657373696f6ed9206330666665653030633066666565"
        "303063306666656530306330666665653030a464617465bb323032352d30362d30315431323a3030"
        "3a30302e3030303030305aa776657273696f6ea3322e30"
    )
    assert msgpack.packb({}) == bytes.fromhex("80")
    key = b"0123456789abcdef" * 4
    assert sign(key, [packed, b"\x80", b"\x80"]) == b"2f8f357b597044447d152a415a8a816492bf1cba924a8997a86de642bac9963d"


def test_connection_file(engine):
    path = engine.connection_file
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    info = json.loads(path.read_text())
    assert info["protocol_version"] == VERSION and info["signature_scheme"] == "hmac-sha256"
    assert info["pid"] == engine.proc.pid and info["transport"] in ("tcp", "ipc")
    assert len(info["key"]) == 64 and int(info["key"], 16) >= 0
    assert isinstance(info["hostname"], str) and info["request_endpoint"] != info["event_endpoint"]


@pytest.mark.skipif(os.name != "posix", reason="the engine lock is an flock")
def test_a_held_lock_beside_the_connection_file_says_the_engine_runs(engine):
    import fcntl

    fd = os.open(f"{engine.connection_file}.lock", os.O_RDONLY)  # section 1: the path with .lock appended
    try:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    finally:
        os.close(fd)


def test_hello_models_ping(client, engine):
    reply = client.request("hello", {"client": "protocol-doc"})
    hello = ok(reply, "hello_reply")
    assert reply.header["session"] == hello["session"]
    assert hello["protocol_version"] == VERSION and hello["pid"] == engine.proc.pid
    assert {"generate", "inpaint", "cancel", "status", "result", "ping"} <= set(hello["requests"])
    assert {"welcome", "accepted", "progress", "done", "error", "cancelled"} <= set(hello["events"])
    limits = hello["limits"]
    assert {"max_part_bytes", "max_buffers", "max_message_bytes", "replay_window_s"} <= set(limits)
    assert hello["default_model"] == "tiny-random" and hello["dtype"] in ("float32", "float16", "bfloat16")
    assert hello["device"]["device"] in ("cuda", "mps", "cpu")
    models = ok(client.request("models"), "models_reply")
    tiny = next(m for m in models["available"] if m["id"] == "tiny-random")
    assert tiny["kind"] == "dit" and tiny["found"] is True
    assert ok(client.request("ping"), "ping_reply")["busy"] in (True, False)


def test_generate_events_audio_refetch_and_retry(client):
    request_id = secrets.token_hex(8)
    content = {"request_id": request_id, "prompt": "bass", "duration": 0.3, "steps": 2, "seed": 7}
    header = client.send("generate", content)
    reply = client.reply(header)
    body = ok(reply, "generate_reply")
    events = client.events_until(request_id, "done")
    assert events[0].header["msg_type"] == "accepted" and events[0].content["kind"] == "generate"
    assert all(e.parent_header == header for e in events)
    sample = [(e.content["i"], e.content["n"]) for e in events
              if e.header["msg_type"] == "progress" and e.content["stage"] == "sample"]
    assert sample and sample[-1] == (2, 2)
    assert body["request_id"] == request_id and body["model"] == "tiny-random" and body["batched"] == 1
    (result,) = body["results"]
    audio_map = result["audio"]
    assert result["seed"] == 7 and result["params"]["prompt"] == "bass"
    assert audio_map["sample_rate"] == 44100 and audio_map["channels"] == 2
    assert audio_map["frames"] == round(0.3 * audio_map["sample_rate"])
    assert len(reply.buffers) == 1 and audio_map["buffer"] == 0
    audio = unplanar(reply.buffers[0], audio_map)
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0

    again = client.request("result", {"request_id": request_id})
    assert ok(again, "result_reply")["results"] == body["results"] and again.buffers == reply.buffers

    # A known request id starts no second job: the reply is the first job's outcome, whatever the seed.
    retry = client.request("generate", content | {"seed": 8})
    assert ok(retry, "generate_reply")["results"] == body["results"] and retry.buffers == reply.buffers


def test_inpaint_keeps_the_source_outside_the_region(client):
    rate, frames = 44100, round(0.3 * 44100)
    t = np.arange(frames) / rate
    source = np.stack([np.sin(2 * np.pi * 220 * t), 0.5 * np.sin(2 * np.pi * 330 * t)]).astype(np.float32)
    audio_map = {"buffer": 0, "sample_rate": rate, "channels": 2, "frames": frames}
    content = {"audio": audio_map, "mask_start": 0.1, "mask_end": 0.2, "steps": 2, "seed": 3}
    reply = client.request("inpaint", content, [planar(source)])
    (result,) = ok(reply, "inpaint_reply")["results"]
    out = unplanar(reply.buffers[result["audio"]["buffer"]], result["audio"])
    assert out.shape == source.shape
    np.testing.assert_array_equal(out[:, : round(0.1 * rate) - 1], source[:, : round(0.1 * rate) - 1])
    np.testing.assert_array_equal(out[:, round(0.2 * rate) + 1 :], source[:, round(0.2 * rate) + 1 :])
    assert not np.array_equal(out, source)


def test_inpaint_takes_any_rate_and_channel_count(client):
    mono = np.linspace(-0.5, 0.5, 5512, dtype=np.float32)[None]  # 0.25 s at 22050 Hz
    audio_map = {"buffer": 0, "sample_rate": 22050, "channels": 1, "frames": mono.shape[1]}
    content = {"audio": audio_map, "mask_start": [0.0, 0.15], "mask_end": [0.05, 0.2], "steps": 2, "seed": 4}
    reply = client.request("inpaint", content, [planar(mono)])
    (result,) = ok(reply, "inpaint_reply")["results"]
    assert result["audio"]["sample_rate"] == 44100 and result["audio"]["channels"] == 2
    assert result["audio"]["frames"] == round(5512 / 22050 * 44100)
    unplanar(reply.buffers[result["audio"]["buffer"]], result["audio"])


def test_cancel_a_running_job_and_status(client):
    request_id = secrets.token_hex(8)
    header = client.send("generate", {"request_id": request_id, "duration": 0.25, "steps": 1000})
    client.events_until(request_id, "progress")
    status = ok(client.request("status"), "status_reply")
    (job,) = [j for j in status["running"] if j["request_id"] == request_id]
    assert job["kind"] == "generate" and job["state"] == "running" and job["session"] == client.session
    assert isinstance(job["elapsed_s"], float) and status["stopping"] is False
    assert ok(client.request("ping"), "ping_reply")["busy"] is True
    refused(client.request("result", {"request_id": request_id}), "result_reply", "not_ready")

    assert ok(client.request("cancel", {"request_id": request_id}), "cancel_reply")["state"] == "cancelled"
    outcome = refused(client.reply(header), "generate_reply", "cancelled")
    assert outcome["request_id"] == request_id
    assert client.events_until(request_id, "cancelled")[-1].parent_header == header
    assert ok(client.request("cancel", {"request_id": request_id}), "cancel_reply")["state"] == "cancelled"
    refused(client.request("cancel", {"request_id": "no-such-job"}), "cancel_reply", "unknown_request")
    idle = ok(client.request("status"), "status_reply")
    assert all(j["request_id"] != request_id for j in idle["running"] + idle["queued"])
    assert idle["retained"] >= 1 and idle["sessions"] >= 1


def test_refusals(client):
    ping = [msgpack.packb(client.header("ping")), msgpack.packb({}), msgpack.packb({})]
    client.send_frames(ping, signature=b"0" * 64)
    refused(client.reply(msgpack.unpackb(ping[0])), "ping_reply", "bad_signature")
    ping = [msgpack.packb(client.header("ping")), msgpack.packb({}), msgpack.packb({})]
    client.send_frames(ping, signature=sign(client.key, ping).upper())
    refused(client.reply(msgpack.unpackb(ping[0])), "ping_reply", "bad_signature")
    client.send_frames(ping[:2])  # no content frame
    refused(client.reply(msgpack.unpackb(ping[0])), "ping_reply", "bad_request")

    replay = [msgpack.packb(client.header("ping")), msgpack.packb({}), msgpack.packb({})]
    client.send_frames(replay)
    ok(client.reply(msgpack.unpackb(replay[0])), "ping_reply")
    client.send_frames(replay)
    refused(client.reply(msgpack.unpackb(replay[0])), "ping_reply", "replayed")

    stale = rfc3339(datetime.now(UTC) - timedelta(minutes=10))
    assert refused(client.reply(client.send("ping", date=stale)), "ping_reply", "replayed")["field"] == "header.date"
    unknown = client.send("frobnicate")
    refused(client.reply(unknown), "frobnicate_reply", "unknown_type")
    reused = client.send("ping", msg_id=unknown["msg_id"])  # a refused request still spends its msg_id
    assert refused(client.reply(reused), "ping_reply", "replayed")["field"] == "header.msg_id"
    refused(client.reply(client.send("ping", version="1.0")), "ping_reply", "unsupported_version")
    assert refused(client.request("ping", {"bogus": 1}), "ping_reply", "bad_request")["field"] == "content.bogus"
    bad_duration = client.request("generate", {"duration": "long"})
    assert refused(bad_duration, "generate_reply", "bad_request")["field"] == "content.duration"
    past_max = client.request("generate", {"seed": 2**63 - 64})  # section 5: seed at most 2^63-65
    assert refused(past_max, "generate_reply", "bad_request")["field"] == "content.seed"
    lower_z = client.send("ping", date=rfc3339(datetime.now(UTC)).replace("Z", "z"))  # section 3: Z or z
    ok(client.reply(lower_z), "ping_reply")
    week_date = client.send("ping", date=datetime.now(UTC).strftime("%G-W%V-%uT%H:%M:%SZ"))
    assert refused(client.reply(week_date), "ping_reply", "bad_request")["field"] == "header.date"
    huge = client.request("ping", {"pad": "x" * (1 << 20)})
    assert refused(huge, "ping_reply", "too_large")["field"] == "content"

    unreadable = [b"\xc1", msgpack.packb({}), msgpack.packb({})]  # 0xc1 is never valid msgpack
    client.send_frames(unreadable)
    refused(client.reply(None), "error", "bad_request")
    client.send("ping", extra="x")  # an unknown header field makes the header unreadable too
    assert refused(client.reply(None), "error", "bad_request")["field"] == "header.extra"
    assert ok(client.request("ping"), "ping_reply")  # the engine carried on


def test_content_checked_when_the_job_runs_fails_the_job_for_good(client):
    source = np.zeros((2, 4410), np.float32)
    audio_map = {"buffer": 0, "sample_rate": 44100, "channels": 2, "frames": 4410}
    request_id = secrets.token_hex(8)
    too_short = {"request_id": request_id, "audio": audio_map, "duration": 0.05, "steps": 2}
    assert refused(client.request("extend", too_short, [planar(source)]), "extend_reply",
                   "bad_request")["request_id"] == request_id
    # the failure is retained under its request id: a corrected retry needs a new id
    fixed = too_short | {"duration": 0.2}
    refused(client.request("extend", fixed, [planar(source)]), "extend_reply", "bad_request")
    fixed["request_id"] = secrets.token_hex(8)
    (result,) = ok(client.request("extend", fixed, [planar(source)]), "extend_reply")["results"]
    assert result["audio"]["frames"] == round(0.2 * 44100)
    no_change = {"audio": audio_map, "init_noise_level": 0, "steps": 2}
    refused(client.request("variation", no_change, [planar(source)]), "variation_reply", "bad_request")
