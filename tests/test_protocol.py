"""Protocol v2 without sockets: envelope, signing, validation, limits, replay, audio buffers, the doc."""

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.protocol import (
    DELIMITER,
    ERROR_CODES,
    EVENT_TYPES,
    REQUESTS,
    Header,
    Limits,
    Message,
    ProtocolError,
    ReplayGuard,
    audio_from_buffers,
    audio_to_buffer,
    check_version,
    decode,
    encode,
    pack,
    parse_date,
    sign,
    split_routing,
    unverified_header,
    validate_request,
)

KEY = b"0123456789abcdef" * 4
DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()


def message(msg_type="ping", content=None, buffers=()):
    return Message(Header.new(msg_type, "s" * 32), None, content or {}, list(buffers))


def wire(msg, key=KEY):
    """Frames after the delimiter, as a receiver gets them."""
    frames = encode(msg, key)
    assert frames[0] == DELIMITER
    return frames[1:]


def test_round_trip_keeps_header_parent_content_and_buffers():
    audio = np.arange(12, dtype=np.float32).reshape(2, 6) / 10
    descriptor, buffer = audio_to_buffer(audio, 48000, 0)
    request = message("variation", {"prompt": "p", "audio": descriptor}, [buffer])
    reply = Message(Header.new("variation_reply", "engine"), request.header, {"status": "ok"}, [b"\x00\x01"])
    got = decode(wire(reply), KEY)
    assert got.header == reply.header and got.parent_header == request.header
    assert got.content == {"status": "ok"} and bytes(got.buffers[0]) == b"\x00\x01"
    back = decode(wire(request), KEY)
    rate, decoded = audio_from_buffers(back.content["audio"], back.buffers)
    assert rate == 48000 and decoded.dtype == np.float32
    np.testing.assert_array_equal(decoded, audio)


def test_audio_buffers_are_planar_little_endian_float32():
    audio = np.array([[1.0, 2.0, 3.0], [-1.0, -2.0, -3.0]], dtype=np.float64)  # converted, not rejected
    descriptor, buffer = audio_to_buffer(audio, 44100, 3)
    assert descriptor == {"buffer": 3, "sample_rate": 44100, "channels": 2, "frames": 3}
    assert bytes(buffer) == np.array([1, 2, 3, -1, -2, -3], dtype="<f4").tobytes()
    with pytest.raises(ValueError, match="audio"):
        audio_to_buffer(np.zeros(5, np.float32), 44100, 0)


@pytest.mark.parametrize(
    "descriptor, buffers, words",
    [
        ({"buffer": 1, "sample_rate": 44100, "channels": 1, "frames": 2}, [b"\0" * 8], "buffer 1"),
        ({"buffer": 0, "sample_rate": 44100, "channels": 2, "frames": 2}, [b"\0" * 8], "needs 16"),
        ({"buffer": 0, "sample_rate": 0, "channels": 1, "frames": 2}, [b"\0" * 8], "sample_rate"),
        ({"buffer": 0, "sample_rate": 44100, "channels": 1}, [b"\0" * 8], "keys"),
        ({"buffer": 0, "sample_rate": 44100.0, "channels": 1, "frames": 2}, [b"\0" * 8], "integers"),
    ],
)
def test_audio_maps_must_match_their_buffer(descriptor, buffers, words):
    with pytest.raises(ProtocolError, match=words) as err:
        audio_from_buffers(descriptor, buffers)
    assert err.value.code == "bad_request"


@pytest.mark.parametrize("part", [0, 1, 2, 3, 4])  # header, parent, content, buffer 0, buffer 1
def test_any_changed_part_breaks_the_signature(part):
    msg = Message(Header.new("generate", "s"), Header.new("x", "t"), {"prompt": "a"}, [b"abcd", b"efgh"])
    frames = wire(msg)
    tampered = bytearray(frames[1 + part])
    tampered[-1] ^= 1
    frames[1 + part] = bytes(tampered)
    with pytest.raises(ProtocolError) as err:
        decode(frames, KEY)
    assert err.value.code == "bad_signature"


def test_moving_bytes_between_parts_breaks_the_signature():
    frames = wire(message("generate", {"prompt": "a"}, [b"abcd", b"efgh"]))
    frames[4], frames[5] = b"abcde", b"fgh"  # same concatenation, different split
    with pytest.raises(ProtocolError, match="signature"):
        decode(frames, KEY)


def test_wrong_key_missing_or_malformed_signature_are_refused():
    frames = wire(message())
    for bad in (wire(message(), key=b"other"), [b"", *frames[1:]], [b"x" * 64, *frames[1:]]):
        with pytest.raises(ProtocolError) as err:
            decode(bad, KEY)
        assert err.value.code == "bad_signature"


def test_signature_is_hmac_sha256_over_length_prefixed_parts():
    import hashlib
    import hmac

    parts = [b"h", b"", b"content"]
    data = b"".join(len(p).to_bytes(8, "big") + p for p in parts)
    assert sign(KEY, parts) == hmac.new(KEY, data, hashlib.sha256).hexdigest().encode()


def test_the_worked_example_in_the_doc_is_exact():
    block = re.search(r"```\nframe 0 delimiter(.*?)```", DOC, re.S).group(0)
    hexes = {}
    for line in block.splitlines()[1:-1]:
        if line.startswith("frame"):
            name = line.split()[2]
            hexes[name] = line.split()[3]
        else:
            hexes[name] += line.strip()
    key = re.search(r'Key from the connection file: `"([0-9a-f]{64})"`', DOC).group(1).encode()
    header = Header("8d1f0c2a9b3e4f5a6b7c8d9e0f1a2b3c", "ping", "c0ffee00c0ffee00c0ffee00c0ffee00",
                    "2025-06-01T12:00:00.000000Z", "2.0")
    frames = encode(Message(header), key)
    assert frames[0].hex() == hexes["delimiter"]
    assert frames[1].decode() == hexes["signature"]
    assert frames[2].hex() == hexes["header"]
    assert frames[3].hex() == hexes["parent_header"] == "80" and frames[4].hex() == hexes["content"]
    assert decode(frames[1:], key).header == header


def doc_section(msg_type: str) -> str:
    """The text of the request's own section: from its ``### <msg_type>`` heading to the next heading."""
    match = re.search(rf"^### {msg_type}\b.*?$(.*?)(?=^##)", DOC, re.M | re.S)
    assert match, f"no section ### {msg_type}"
    return match[1]


def test_doc_has_a_table_row_for_every_request_field_event_and_error_code():
    inherited = set(REQUESTS["generate"])
    for msg_type, fields in REQUESTS.items():
        section = doc_section(msg_type)
        for name in fields:
            if msg_type != "generate" and name in inherited and f"| `{name}` |" not in section:
                assert "All `generate` fields" in section, (msg_type, name)  # generate's rows stand for it
            else:
                assert f"| `{name}` |" in section, f"{msg_type}: no row for `{name}` in its own table"
    for code in ERROR_CODES:
        assert f"| `{code}` |" in DOC, code
    for event in EVENT_TYPES:
        assert f"| `{event}` |" in DOC, event


def test_limits_refuse_large_parts_many_buffers_and_large_messages():
    limits = Limits(max_part_bytes=100, max_buffers=2, max_message_bytes=1000)
    limits.check_frames([64, 100, 1, 100, 300, 300])
    for sizes, words in [([64, 101, 1, 1], "header is 101"), ([64, 1, 1, 1, 1, 1, 1], "3 buffers"),
                         ([64, 1, 1, 1, 500, 500], "message is 1067"), ([64, 1, 1], "expected signature")]:
        with pytest.raises(ProtocolError, match=words) as err:
            limits.check_frames(sizes)
        assert err.value.code in ("too_large", "bad_request")


def test_encode_with_the_receivers_limits_refuses_what_it_would_refuse(monkeypatch):
    limits = Limits(max_part_bytes=1000, max_message_bytes=5000)
    msg = message("inpaint", {"prompt": "x"})
    room = 5000 - 64 - sum(len(part) for part in pack(msg))  # the signature and the maps count too
    msg.buffers = [b"\0" * room]
    assert decode(encode(msg, KEY, limits)[1:], KEY, limits).buffers == msg.buffers  # at the limit: both accept
    msg.buffers = [b"\0" * (room + 1)]
    for refuse in (lambda: encode(msg, KEY, limits), lambda: decode(wire(msg), KEY, limits)):
        with pytest.raises(ProtocolError, match="message is 5001 bytes"):
            refuse()
    signed = []
    monkeypatch.setattr("bridge.protocol.sign", lambda key, parts: signed.append(parts) or b"0" * 64)
    for msg, field in [(message("inpaint", {}, [b"\0" * 5000]), None), (message("x", {"p": "x" * 1000}), "content")]:
        with pytest.raises(ProtocolError) as err:
            encode(msg, KEY, limits)
        assert err.value.code == "too_large" and err.value.field == field
    assert signed == []  # refused before spending time signing


def test_limits_from_hello_ignore_keys_a_later_version_adds():
    sent = {"max_part_bytes": 10, "max_buffers": 2, "max_message_bytes": 99, "replay_window_s": 5.0, "new": 1}
    assert Limits.from_dict(sent) == Limits(10, 2, 99, 5.0)


def test_hello_declares_what_the_client_receives_at_least_64_kib():
    assert validate_request(message("hello", {"max_message_bytes": 1 << 16})) == {"max_message_bytes": 65536}
    for bad in (1000, 2.0**20, "big"):
        with pytest.raises(ProtocolError) as err:
            validate_request(message("hello", {"max_message_bytes": bad}))
        assert err.value.field == "content.max_message_bytes"


def test_decode_checks_limits_before_the_signature():
    frames = wire(message("generate", {"prompt": "x" * 5000}))
    with pytest.raises(ProtocolError) as err:
        decode(frames, b"wrong key", Limits(max_part_bytes=1000))
    assert err.value.code == "too_large" and err.value.field == "content"


def test_replay_guard_refuses_repeats_and_dates_outside_the_window():
    guard = ReplayGuard(window_s=10)
    header = Header.new("ping", "s")
    now = parse_date(header.date)
    guard.check(header, now)
    with pytest.raises(ProtocolError, match="already received") as err:
        guard.check(header, now + 1)
    assert err.value.code == "replayed"
    old = Header("a" * 32, "ping", "s", (datetime.now(UTC) - timedelta(seconds=30)).isoformat())
    with pytest.raises(ProtocolError, match="window") as err:
        guard.check(old)
    assert err.value.field == "header.date"
    guard.check(Header.new("ping", "s"), now)  # a new id inside the window passes


def test_replay_guard_memory_is_bounded():
    guard = ReplayGuard(window_s=10, max_entries=3)
    headers = [Header.new("ping", "s") for _ in range(5)]
    now = parse_date(headers[-1].date)
    for h in headers:
        guard.check(h, now)
    assert len(guard._seen) <= 3


@pytest.mark.parametrize("text", ["2025-06-01T12:00:00Z", "2025-06-01T12:00:00.123Z",
                                  "2025-06-01T12:00:00.123456+00:00", "2025-06-01T14:00:00+02:00",
                                  "2025-06-01T12:00:00z", "2025-06-01t12:00:00.1234567Z"])
def test_dates_in_rfc3339_forms_parse_to_the_same_instant(text):
    assert abs(parse_date(text) - datetime(2025, 6, 1, 12, tzinfo=UTC).timestamp()) < 1


@pytest.mark.parametrize("text", ["yesterday", "2025-06-01T12:00:00", "", "2025-W22-7T12:00:00Z",
                                  "20250601T120000Z", "2025-152T12:00:00Z", "2025-06-01T12:00Z",
                                  "2025-13-01T12:00:00Z", "2025-06-01T12:00:00+0200"])
def test_bad_dates_name_the_header_field(text):
    with pytest.raises(ProtocolError) as err:
        parse_date(text)
    assert err.value.field == "header.date"


def test_major_version_must_match():
    check_version(Header("a", "ping", "s", "d", "2.7"))
    with pytest.raises(ProtocolError) as err:
        check_version(Header("a", "ping", "s", "d", "1.0"))
    assert err.value.code == "unsupported_version"


def test_headers_need_every_field_and_no_others():
    good = Header.new("ping", "s").to_dict()
    for broken, field in [({**good, "extra": 1}, "header.extra"), ({**good, "msg_id": ""}, "header.msg_id"),
                          ({k: v for k, v in good.items() if k != "date"}, "header.date"),
                          ({**good, "session": 5}, "header.session")]:
        with pytest.raises(ProtocolError) as err:
            Header.from_dict(broken)
        assert err.value.field == field


MINIMAL = {
    "hello": {}, "models": {}, "load": {"model": "m"}, "unload": {"model": "m"}, "generate": {},
    "inpaint": {"audio": {"path": "/a.wav"}, "mask_start": 1, "mask_end": [2.5]},
    "extend": {"audio": {"path": "/a.wav"}, "duration": 3},
    "variation": {"audio": {"path": "/a.wav"}}, "cancel": {"request_id": "r"}, "status": {},
    "result": {"request_id": "r"}, "ping": {}, "shutdown": {},
}


def test_every_request_type_has_a_minimal_valid_content():
    assert set(MINIMAL) == set(REQUESTS)
    for msg_type, content in MINIMAL.items():
        assert validate_request(message(msg_type, content)) == content


def test_the_largest_seed_leaves_room_for_the_largest_batch():
    largest = {"seed": 2**63 - 65, "batch_size": 64}
    assert validate_request(message("generate", largest)) == largest
    with pytest.raises(ProtocolError, match="9223372036854775743"):  # the maximum, exactly
        validate_request(message("generate", {"seed": 2**63 - 64}))


@pytest.mark.parametrize(
    "msg_type, content, field",
    [
        ("load", {}, "content.model"),
        ("generate", {"promt": "typo"}, "content.promt"),
        ("generate", {"duration": "8"}, "content.duration"),
        ("generate", {"duration": 0}, "content.duration"),
        ("generate", {"duration": float("nan")}, "content.duration"),
        ("generate", {"steps": 2.0}, "content.steps"),
        ("generate", {"steps": True}, "content.steps"),
        ("generate", {"seed": -2}, "content.seed"),
        ("generate", {"seed": 2**63 - 64}, "content.seed"),  # seed + batch_size - 1 must fit in an int64
        ("generate", {"batch_size": 65}, "content.batch_size"),
        ("generate", {"loras": [["a.safetensors"]]}, "content.loras"),
        ("inpaint", {"audio": {"path": "/a"}, "mask_start": [], "mask_end": 1}, "content.mask_start"),
        ("inpaint", {"audio": {"buffer": 0, "sample_rate": 8000, "channels": 1, "frames": 4}, "mask_start": 0,
                     "mask_end": 1}, "content.audio"),
        ("extend", {"audio": {"path": "/a"}}, "content.duration"),
        ("variation", {"audio": {"path": "/a"}, "init_noise_level": 1.5}, "content.init_noise_level"),
        ("result", {"request_id": "r", "wait": 1}, "content.wait"),
        ("variation", {"audio": {"path": "/a"}, "init_noise_level": 0}, "content.init_noise_level"),
        ("generate", {"request_id": "../../etc/x"}, "content.request_id"),
        ("generate", {"request_id": ""}, "content.request_id"),
        ("cancel", {"request_id": "a/b"}, "content.request_id"),
        ("generate", {"sampler": "heun"}, "content.sampler"),
        ("inpaint", {"audio": {"path": "/a"}, "mask_start": [1, 3], "mask_end": 2}, "content.mask_end"),
        ("inpaint", {"audio": {"path": "/a"}, "mask_start": 2, "mask_end": 1}, "content.mask_end"),
    ],
)
def test_bad_content_is_refused_naming_the_field(msg_type, content, field):
    with pytest.raises(ProtocolError) as err:
        validate_request(message(msg_type, content))
    assert err.value.code == "bad_request" and err.value.field == field
    assert field in err.value.message


def test_nil_fields_count_as_absent_and_unknown_types_are_named():
    assert validate_request(message("generate", {"prompt": "p", "seed": None})) == {"prompt": "p"}
    with pytest.raises(ProtocolError) as err:
        validate_request(message("explode", {}))
    assert err.value.code == "unknown_type" and err.value.field == "header.msg_type"


def test_split_routing_finds_identities_and_falls_back_to_the_first_frame():
    assert split_routing([b"id", b"", DELIMITER, b"sig"]) == ([b"id", b""], [b"sig"])
    assert split_routing([b"id", b"garbage"]) == ([b"id"], [])


def test_unverified_header_is_read_only_when_well_formed():
    frames = wire(message("status"))
    assert unverified_header(frames).msg_type == "status"
    assert unverified_header([b"sig", b"\xc1"]) is None
    assert unverified_header([b"sig"]) is None
    reply = Message(Header.new("ping_reply", "e" * 32), Header.new("ping", "c" * 32))
    assert unverified_header(wire(reply), "parent_header") == reply.parent_header
    assert unverified_header(wire(message("ping")), "parent_header") is None  # {}: answers nothing


values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(msg_type=st.sampled_from(sorted(REQUESTS)), content=st.dictionaries(
    st.sampled_from(sorted({f for fields in REQUESTS.values() for f in fields})), values, max_size=4))
def test_any_content_either_validates_or_names_a_field(msg_type, content):
    try:
        validate_request(message(msg_type, content, [b"\0" * 16]))
    except ProtocolError as exc:
        # a buffer no audio map refers to is named as such (docs/protocol.md section 8)
        assert exc.code == "bad_request" and exc.field and (exc.field.startswith("content.") or exc.field == "buffers")


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=7))
def test_garbage_frames_only_ever_raise_protocol_errors(frames):
    with pytest.raises(ProtocolError):
        decode(frames, KEY)


@settings(max_examples=100, deadline=None)
@given(header=values, parent=values, content=values)
def test_signed_but_malformed_maps_are_bad_requests(header, parent, content):
    parts = [msgpack.packb(header), msgpack.packb(parent), msgpack.packb(content)]
    with pytest.raises(ProtocolError) as err:
        decode([sign(KEY, parts), *parts], KEY)
    assert err.value.code == "bad_request"
