"""Protocol conformance of the plugin's C++ code, both ways, through sa3_protocol_tool (built from
the plugin's own protocol sources): what it encodes and signs, bridge.protocol and a real engine accept;
what bridge.protocol encodes (replies, errors, cancelled, audio), it decodes and verifies."""

import json
import struct
import subprocess

import numpy as np
import pytest

from bridge.protocol import (
    PROTOCOL_VERSION,
    Header,
    Message,
    ProtocolError,
    audio_to_buffer,
    decode,
    encode,
    error_content,
    validate_request,
)

KEY = b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"


def frames_to_bytes(frames) -> bytes:
    return b"".join(struct.pack(">Q", len(bytes(f))) + bytes(f) for f in frames)


def bytes_to_frames(data: bytes) -> list[bytes]:
    frames, at = [], 0
    while at < len(data):
        (size,) = struct.unpack_from(">Q", data, at)
        frames.append(data[at + 8 : at + 8 + size])
        at += 8 + size
    return frames


def tool(path, *args, stdin: bytes = b"", check=True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(path), *map(str, args)], input=stdin, capture_output=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"sa3_protocol_tool {args[0]} failed ({result.returncode}): {result.stderr.decode()}")
    return result


def cpp_encode(protocol_tool, msg_type, content, *buffers, tmp_path=None, key=KEY):
    args = ["encode", "--key", key.decode(), "--type", msg_type, "--content", json.dumps(content)]
    for i, buffer in enumerate(buffers):
        file = tmp_path / f"buffer{i}.bin"
        file.write_bytes(buffer)
        args += ["--buffer", file]
    return bytes_to_frames(tool(protocol_tool, *args).stdout)


def cpp_decode(protocol_tool, frames, key=KEY):
    result = tool(protocol_tool, "decode", "--key", key.decode(), stdin=frames_to_bytes(frames), check=False)
    assert result.returncode in (0, 2), result.stderr.decode()
    return json.loads(result.stdout)


def test_cpp_request_is_verified_and_valid_for_bridge_protocol(protocol_tool, tmp_path):
    audio = np.linspace(-1, 1, 2 * 300, dtype=np.float32).reshape(2, 300)
    descriptor, buffer = audio_to_buffer(audio, 48000, 0)
    content = {"request_id": "r-1", "prompt": "pads, 90 BPM", "duration": 2.5, "seed": 7,
               "mask_start": 0.5, "mask_end": 1.25, "audio": descriptor, "splice": True}
    frames = cpp_encode(protocol_tool, "inpaint", content, bytes(buffer), tmp_path=tmp_path)
    assert frames[0] == b"<SA3|MSG>"
    message = decode(frames[1:], KEY)  # checks the signature, then the header
    assert message.header.msg_type == "inpaint" and message.header.version == PROTOCOL_VERSION
    assert message.parent_header is None
    assert validate_request(message) == content
    assert bytes(message.buffers[0]) == bytes(buffer)


def test_cpp_request_signed_with_another_key_is_refused(protocol_tool, tmp_path):
    frames = cpp_encode(protocol_tool, "ping", {}, tmp_path=tmp_path, key=b"f" * 64)
    with pytest.raises(ProtocolError) as refused:
        decode(frames[1:], KEY)
    assert refused.value.code == "bad_signature"


def test_cpp_decodes_a_reply_with_audio(protocol_tool):
    request = Header.new("generate", "plugin")
    audio = np.arange(2 * 5, dtype=np.float32).reshape(2, 5) / 10
    descriptor, buffer = audio_to_buffer(audio, 44100, 0)
    reply = Message(Header.new("generate_reply", "engine"), request,
                    {"status": "ok", "request_id": "r", "results": [{"seed": 3, "params": {}, "timings": {},
                                                                      "audio": descriptor}]}, [buffer])
    decoded = cpp_decode(protocol_tool, encode(reply, KEY))
    assert decoded["msg_type"] == "generate_reply"
    assert decoded["parent_msg_id"] == request.msg_id
    assert decoded["content"]["results"][0]["seed"] == 3
    [clip] = decoded["audio"]
    assert (clip["sample_rate"], clip["channels"], clip["frames"]) == (44100, 2, 5)
    assert clip["head"] == pytest.approx(audio.reshape(-1)[:8].tolist())


@pytest.mark.parametrize("code", ["cancelled", "too_large", "bad_request"])
def test_cpp_decodes_error_and_cancelled_replies(protocol_tool, code):
    request = Header.new("extend", "plugin")
    content = dict(error_content(code, f"a {code} reply", "results" if code == "too_large" else None),
                   request_id="r-9")
    decoded = cpp_decode(protocol_tool, encode(Message(Header.new("extend_reply", "engine"), request, content), KEY))
    assert decoded["content"] == content
    assert decoded["parent_msg_id"] == request.msg_id


def test_cpp_decodes_events_after_their_topic_frame(protocol_tool):
    event = Message(Header.new("progress", "engine"), Header.new("generate", "plugin"),
                    {"request_id": "r", "stage": "sample", "i": 3, "n": 8})
    decoded = cpp_decode(protocol_tool, [b"plugin", *encode(event, KEY)])
    assert decoded["msg_type"] == "progress" and decoded["content"]["i"] == 3


def test_cpp_refuses_a_reply_with_a_bad_signature(protocol_tool):
    frames = encode(Message(Header.new("ping_reply", "engine"), Header.new("ping", "p"), {"status": "ok"}), KEY)
    frames[1] = b"0" * 64
    assert cpp_decode(protocol_tool, frames)["error"] == "bad_signature"


def test_real_engine_accepts_cpp_requests(protocol_tool, plugin_engine):
    ping = json.loads(tool(protocol_tool, "call", "--type", "ping", "--content", "{}").stdout)
    assert ping["reply"]["content"]["status"] == "ok"
    generated = json.loads(tool(protocol_tool, "call", "--type", "generate", "--content",
                                json.dumps({"prompt": "test", "duration": 0.5, "seed": 1, "steps": 2})).stdout)
    reply = generated["reply"]
    assert reply["content"]["status"] == "ok", reply["content"]
    assert reply["audio"][0]["frames"] == round(0.5 * 44100)
    assert "progress" in generated["events"] and "done" in generated["events"]


def test_real_engine_refusal_reaches_the_cpp_client(protocol_tool, plugin_engine):
    refused = json.loads(tool(protocol_tool, "call", "--type", "generate", "--content",
                              json.dumps({"prompt": "x", "duration": -1.0})).stdout)
    content = refused["reply"]["content"]
    assert content["status"] == "error" and content["code"] == "bad_request"
    assert content["field"] == "content.duration"
