"""A remote engine over CurveZMQ: a real engine process on loopback tcp with ``--curve``, the "engine machine"
and the "client machine" simulated by separate key folders. Allowed clients work end to end; unknown keys,
no keys and wrong HMAC keys are refused while others are served; the bytes on the wire are encrypted
(captured by a recording relay); engine-side paths are refused from remote peers and the client sends
buffers instead. All traffic stays on 127.0.0.1."""

import os
import selectors
import socket
import stat
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import zmq

from bridge import connection, curve
from bridge.client import NETWORK, EngineClient, EngineError, EngineRefused, EngineTimeout
from bridge.protocol import Header, Message, decode, encode, split_routing
from bridge.spawn import EngineProcess
from plugin_shell.backends import EngineBackend
from sa3_engine.audio import read_audio, write_wav
from sa3_engine.engine import security

PROMPT = "zebra-marimba-curve-4242"  # looked for in the captured bytes


@pytest.fixture(scope="module")
def machines(tmp_path_factory):
    root = tmp_path_factory.mktemp("curve")
    return {"engine": root / "engine-machine", "laptop": root / "laptop", "root": root}


@pytest.fixture(scope="module")
def engine(machines):
    with EngineProcess(machines["root"], "--transport", "tcp", "--curve", "--port", "0",
                       "--keys-dir", str(machines["engine"])) as process:
        yield process


def paired_file(engine, machines, name: str, client_keys: Path) -> Path:
    """Pair a client whose key was made on its own machine; its connection file, as `sa3 engine connect` writes it."""
    key = curve.client_keypair(client_keys).public
    info = security.pair(name, key, engine.connection_file, keys_dir=machines["engine"])
    return connection.write(info, machines["root"] / f"{name}.json")


@pytest.fixture(scope="module")
def laptop(engine, machines) -> Path:
    return paired_file(engine, machines, "laptop", machines["laptop"])


@pytest.fixture
def client(laptop, machines):
    with EngineClient(laptop, keys_dir=machines["laptop"]) as c:
        yield c


def test_an_allowed_client_generates_inpaints_cancels_and_hears_progress(client):
    events = []
    (clip,) = client.generate(PROMPT, duration=0.5, steps=3, seed=5, on_progress=events.append)
    assert clip.audio.shape == (2, 22050) and np.isfinite(clip.audio).all()
    assert [e["i"] for e in events if e["event"] == "progress" and e["stage"] == "sample"][-1] == 3
    assert (client.heartbeat_s, client.liveness_s, client.reconnect_grace_s) == NETWORK  # a remote file

    source = np.random.default_rng(1).uniform(-0.5, 0.5, (2, 44100)).astype(np.float32)
    (inpainted,) = client.inpaint(source, 0.25, 0.5, "fill", sample_rate=44100, steps=2, seed=1)
    np.testing.assert_array_equal(inpainted.audio[:, :8000], source[:, :8000])  # the buffer went both ways

    def on_progress(event):
        if event["event"] == "progress":
            client.cancel(event["request_id"])

    with pytest.raises(EngineError) as err:
        client.generate("stop me", duration=0.25, steps=1000, on_progress=on_progress)
    assert err.value.code == "cancelled"
    assert client.status()["running"] == []


def test_the_shell_backend_uses_a_remote_engine_through_the_same_discovery(client):
    backend = EngineBackend(client, "tiny-random")
    made = backend.generate("shell over curve", seconds=0.25, steps=2, seed=3)
    assert made.audio.shape == (2, 11025) and backend.sample_rate == 44100


def test_unknown_key_no_key_and_wrong_hmac_key_are_refused_while_others_are_served(engine, laptop, machines, client):
    info = connection.read(laptop)
    stranger = curve.Keypair.new()  # a stolen connection file, with the thief's own key
    cases = {
        "unknown key": replace(info, curve_publickey=stranger.public, curve_secretkey=stranger.secret),
        "no key": replace(info, curve_serverkey=None, curve_publickey=None),
        "wrong HMAC key": replace(info, key=connection.new_key()),
    }
    for name, bad in cases.items():
        path = connection.write(bad, machines["root"] / "bad.json")
        with EngineClient(path, keys_dir=machines["laptop"], retries=0, timeout=10) as intruder:
            with pytest.raises(EngineError) as err:
                intruder.generate("let me in", duration=0.25, steps=1)
        expected = "bad_signature" if name == "wrong HMAC key" else "refused"
        assert err.value.code == expected, name
        assert client.ping() > 0, f"the engine stopped serving after the {name} client"
    assert engine.proc.poll() is None
    assert f"client key {stranger.public} is not on the allow-list" in engine.output()


def test_a_stolen_connection_file_without_the_client_key_does_not_get_in(laptop, machines, tmp_path):
    stolen = connection.read(laptop)
    assert stolen.curve_secretkey is None  # the client's secret stayed in its key folder
    thief_keys = tmp_path / "thief"
    thief = curve.client_keypair(thief_keys)
    with EngineClient(laptop, keys_dir=thief_keys, retries=0) as client:
        with pytest.raises(EngineRefused, match="paired for client key"):  # not the thief's key
            client.ping()
    forged = connection.write(replace(stolen, curve_publickey=thief.public), tmp_path / "forged.json")
    with EngineClient(forged, keys_dir=thief_keys, retries=0) as client:
        with pytest.raises(EngineRefused, match="refused this client's key"):  # the engine says no
            client.ping()


def test_a_removed_key_is_refused_by_the_running_engine(engine, machines, tmp_path):
    path = paired_file(engine, machines, "tablet", tmp_path / "tablet")
    with EngineClient(path, keys_dir=tmp_path / "tablet", retries=0, timeout=3) as tablet:
        assert tablet.ping() > 0
        assert security.AllowList(machines["engine"]).remove("tablet")
        with pytest.raises(EngineTimeout):  # its open connection: the request is dropped, not answered
            tablet.ping()
        with pytest.raises(EngineRefused):  # a new connection: the handshake is refused
            tablet.ping()


class RecordingRelay:
    """A tcp relay on 127.0.0.1 to an upstream endpoint keeping every byte it forwards, both ways. Stops
    by itself after ``lifetime_s``."""

    def __init__(self, upstream: str, lifetime_s: float = 120.0):
        host, port = upstream[len("tcp://"):].rsplit(":", 1)
        self.upstream = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"tcp://127.0.0.1:{self.listener.getsockname()[1]}"
        self.captured = bytearray()
        self.deadline = time.monotonic() + lifetime_s
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        selector, peers = selectors.DefaultSelector(), {}
        selector.register(self.listener, selectors.EVENT_READ)
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            for key, _ in selector.select(0.1):
                sock = key.fileobj
                if sock is self.listener:
                    inside, _ = self.listener.accept()
                    outside = socket.create_connection(self.upstream)
                    peers[inside], peers[outside] = outside, inside
                    for s in (inside, outside):
                        selector.register(s, selectors.EVENT_READ)
                    continue
                if sock not in peers:
                    continue
                data = sock.recv(1 << 16)
                if data:
                    self.captured += data
                    peers[sock].sendall(data)
                else:
                    other = peers.pop(sock)
                    peers.pop(other, None)
                    for s in (sock, other):
                        selector.unregister(s)
                        s.close()
        for s in [*peers, self.listener]:
            s.close()

    def stop(self):
        self._stop.set()
        self.thread.join(5)


def relayed_exchange(info: connection.ConnectionInfo, folder: Path, keys_dir) -> tuple[bytes, list[bytes]]:
    """Generate (with ``PROMPT``) and inpaint a source through relays of both sockets; (captured bytes,
    patterns that must not be readable: the prompt, source and result audio samples)."""
    relays = [RecordingRelay(info.request_endpoint), RecordingRelay(info.event_endpoint)]
    path = connection.write(replace(info, request_endpoint=relays[0].endpoint, event_endpoint=relays[1].endpoint),
                            folder / f"relayed-{uuid.uuid4().hex}.json")
    source = np.random.default_rng(7).uniform(-0.5, 0.5, (2, 22050)).astype(np.float32)
    try:
        with EngineClient(path, keys_dir=keys_dir) as client:
            events = []
            client.generate(PROMPT, duration=0.25, steps=2, seed=1, on_progress=events.append)
            (result,) = client.inpaint(source, 0.1, 0.2, PROMPT, sample_rate=44100, steps=2, seed=2)
    finally:
        for relay in relays:
            relay.stop()
    # events are best effort (a slow subscription can miss a short job's), but the subscription and its
    # welcome always cross the event socket's relay, so that socket's bytes are checked too
    assert relays[1].captured, "nothing crossed the event socket's relay"
    patterns = [PROMPT.encode(), source[0, 1000:1008].astype("<f4").tobytes(),
                source[1, 5000:5008].astype("<f4").tobytes(), result.audio[0, 9000:9008].astype("<f4").tobytes()]
    return bytes(relays[0].captured + relays[1].captured), patterns


def test_what_crosses_the_wire_is_encrypted_with_curve_and_readable_without(engine, laptop, machines, tmp_path):
    captured, patterns = relayed_exchange(connection.read(laptop), tmp_path, machines["laptop"])
    assert len(captured) > 2 * 22050 * 4  # the source audio went through the relay
    assert [p for p in patterns if p in captured] == []
    with EngineProcess(tmp_path, "--transport", "tcp") as plain:  # no CURVE, same exchange
        captured, patterns = relayed_exchange(plain.info(), tmp_path, machines["laptop"])
    assert [p for p in patterns if p in captured] == patterns


class RawCurve:
    """The wire by hand over CURVE: a request exactly as given, no client-side fallbacks."""

    def __init__(self, info, pair: curve.Keypair):
        self.context = zmq.Context()
        self.key, self.session = info.key_bytes, uuid.uuid4().hex
        self.sock = self.context.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        curve.configure_client(self.sock, info.curve_serverkey, pair, network=False)
        self.sock.connect(info.request_endpoint)

    def call(self, msg_type, content) -> Message:
        self.sock.send_multipart(encode(Message(Header.new(msg_type, self.session), None, content), self.key))
        assert self.sock.poll(30_000), "no reply from the engine"
        return decode(split_routing([b"id", *self.sock.recv_multipart()])[1], self.key)

    def close(self):
        self.context.destroy(linger=0)


def test_a_remote_request_naming_an_engine_side_path_is_refused_and_the_client_sends_buffers(
        engine, laptop, machines, tmp_path):
    source = np.random.default_rng(3).uniform(-0.5, 0.5, (2, 44100)).astype(np.float32)
    wav = write_wav(tmp_path / "source.wav", source, 44100, bit_depth="float")
    raw = RawCurve(connection.read(laptop), curve.client_keypair(machines["laptop"]))
    try:
        requests = [("inpaint", {"audio": {"path": str(wav)}, "mask_start": 0.1, "mask_end": 0.2}, "content.audio.path"),
                    ("variation", {"audio": {"path": str(wav)}}, "content.audio.path"),
                    ("generate", {"duration": 0.25, "output_dir": str(tmp_path / "engine-side")}, "content.output_dir")]
        for msg_type, content, field in requests:
            reply = raw.call(msg_type, {**content, "steps": 1})
            assert (reply.content["code"], reply.content["field"]) == ("bad_request", field)
            assert "remote" in reply.content["message"]
        assert not (tmp_path / "engine-side").exists()
    finally:
        raw.close()

    with EngineClient(laptop, keys_dir=machines["laptop"]) as client:
        (inpainted,) = client.inpaint(str(wav), 0.25, 0.5, "fill", steps=2, seed=1)  # read here, sent as a buffer
        np.testing.assert_array_equal(inpainted.audio[:, :8000], source[:, :8000])
        (written,) = client.generate("to my disk", duration=0.25, steps=2, output_dir=str(tmp_path / "mine"),
                                     request_id="remote-1")
    assert written.path == str(tmp_path / "mine" / "remote-1-0.wav")
    audio, rate = read_audio(written.path)
    assert rate == 44100 and audio.shape == (2, 11025)
    np.testing.assert_array_equal(audio, written.audio)

    with EngineClient(engine.connection_file) as local:  # the engine's own file: this machine, paths allowed
        (on_disk,) = local.generate("engine side", duration=0.25, steps=1, output_dir=str(tmp_path / "engine-side"))
    assert on_disk.audio is None and Path(on_disk.path).parent == tmp_path / "engine-side"


def test_the_engine_identity_is_made_once_and_kept_user_only(tmp_path):
    first = security.identity(tmp_path / "keys")
    assert security.identity(tmp_path / "keys") == first
    folder = tmp_path / "keys" / "engine"
    assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(folder / security.IDENTITY_FILE).st_mode) == 0o600
    allow = security.AllowList(tmp_path / "keys")
    key = curve.Keypair.new().public
    allow.add(key, "laptop")
    assert allow.entries() == {key: "laptop"} and stat.S_IMODE(os.stat(allow.path).st_mode) == 0o600
    with pytest.raises(ValueError, match="Z85"):
        allow.add("not-a-key", "other")
    assert allow.remove("laptop") == [key] and not allow.allowed(key)
    os.chmod(folder / security.IDENTITY_FILE, 0o640)
    with pytest.raises(ValueError, match="other users"):
        security.identity(tmp_path / "keys")


def test_a_pairing_string_carries_no_secret_unless_the_pairing_made_the_key(engine, machines, tmp_path):
    own = paired_file(engine, machines, "desk", tmp_path / "desk")
    text = curve.pairing_string(connection.read(own))
    info = connection.from_dict(curve.parse_pairing(text), "pairing")
    assert info.remote and info.curve_secretkey is None and info.request_endpoint == connection.read(own).request_endpoint
    made = security.pair("phone", None, engine.connection_file, keys_dir=machines["engine"])
    parsed = curve.parse_pairing(curve.pairing_string(made))
    assert curve.Keypair.from_secret(parsed["curve_secretkey"]).public == made.curve_publickey
    assert {"desk", "phone"} <= set(security.AllowList(machines["engine"]).entries().values())


def sa3(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sa3_engine.cli.main", *args], capture_output=True, text=True,
                          timeout=120, env=env)


def test_two_machines_pair_with_the_engine_commands(engine, machines, tmp_path):
    key = sa3("engine", "keys", "client", "--keys-dir", str(tmp_path / "studio-laptop"))
    assert key.returncode == 0, key.stderr
    pair = sa3("engine", "pair", "--name", "studio-laptop", "--client-key", key.stdout.strip(), "--connection-file",
               str(engine.connection_file), "--keys-dir", str(machines["engine"]))
    assert pair.returncode == 0 and pair.stdout.startswith(curve.PAIRING_PREFIX), pair.stderr
    out = tmp_path / "remote.json"
    joined = sa3("engine", "connect", pair.stdout.strip(), "--out", str(out), "--keys-dir", str(tmp_path / "studio-laptop"))
    assert joined.returncode == 0 and "connected: engine pid" in joined.stdout, joined.stderr
    status = sa3("engine", "status", "--connection-file", str(out), "--keys-dir", str(tmp_path / "studio-laptop"))
    assert status.returncode == 0 and f"engine pid {engine.proc.pid}" in status.stdout, status.stderr
    listed = sa3("engine", "keys", "list", "--keys-dir", str(machines["engine"]))
    assert f"{key.stdout.strip()} studio-laptop" in listed.stdout
    assert sa3("engine", "keys", "remove", "studio-laptop", "--keys-dir", str(machines["engine"])).returncode == 0
    refused = sa3("engine", "status", "--connection-file", str(out), "--keys-dir", str(tmp_path / "studio-laptop"))
    assert refused.returncode == 1 and "refused this client's key" in refused.stderr

