"""Protocol v2 between the engine and its clients: envelope, signing, validation, limits, audio buffers.

Pure: no sockets. ``docs/protocol.md`` is the contract; this module is one implementation of it.

A message on the wire is a list of frames::

    [routing..., DELIMITER, signature, header, parent_header, content, buffer_0, ..., buffer_n]

``header``, ``parent_header`` and ``content`` are msgpack maps; buffers are raw bytes (audio as
planar little-endian float32). The signature is the hex HMAC-SHA256 of every part after it, each
preceded by its length, keyed with the connection file's ``key``.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

import msgpack
import numpy as np

PROTOCOL_VERSION = "2.0"
SIGNATURE_SCHEME = "hmac-sha256"
DELIMITER = b"<SA3|MSG>"
SIGNATURE_BYTES = 64  # hex HMAC-SHA256
MAX_ROUTING_FRAMES = 8
# "major.minor", two decimal numbers without leading zeros or signs
VERSION_FORMAT = re.compile(r"(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)", re.ASCII)
MAX_DURATION_S = 1800  # the longest result or source audio (the pipeline's own cap), in seconds
SAMPLE_RATES = (1000, 768000)  # the audio rates the engine reads and resamples, in Hz

ERROR_CODES = {
    "bad_request": "the message or a content field is malformed; `field` names it",
    "bad_signature": "the signature is missing or does not match",
    "replayed": "the msg_id was seen before, or the date is outside the replay window",
    "too_large": "a frame, the buffer count or the whole message is over the limits, or a job's results "
                 "would not fit in one reply to its client",
    "unsupported_version": "the header's major protocol version differs from the engine's",
    "unknown_type": "msg_type is not a request this engine handles",
    "unknown_request": "no job with this request_id is queued, running or retained",
    "unknown_model": "the model id or folder was not found",
    "not_ready": "the job is still queued or running (result with wait=false)",
    "cancelled": "the job was cancelled",
    "shutting_down": "the engine is stopping and takes no new jobs",
    "busy": "the engine's queue is full (jobs per session, queued jobs or queued input bytes): retry later; or "
            "(field results) this connection left too many replies unread: read them, then fetch with result",
    "internal": "an unexpected failure inside the engine; the message says what",
}

EVENT_TYPES = ("welcome", "accepted", "queued", "progress", "done", "error", "cancelled")


class ProtocolError(Exception):
    """A message that must be refused; becomes an error reply with a stable ``code``."""

    def __init__(self, code: str, message: str, field: str | None = None):
        assert code in ERROR_CODES, code
        super().__init__(message)
        self.code, self.message, self.field = code, message, field

    def content(self) -> dict:
        return error_content(self.code, self.message, self.field)


def error_content(code: str, message: str, field: str | None = None) -> dict:
    content = {"status": "error", "code": code, "message": message}
    if field is not None:
        content["field"] = field
    return content


@dataclass(frozen=True)
class Limits:
    """Sizes a receiver accepts. ``max_message_bytes`` is also the socket's ZMQ_MAXMSGSIZE."""

    max_part_bytes: int = 1 << 20  # header, parent_header and content, each
    max_buffers: int = 64
    max_message_bytes: int = 512 << 20  # every frame together, buffers included
    replay_window_s: float = 120.0

    def check_frames(self, sizes: list[int]) -> None:
        """``sizes`` of the frames after the delimiter (signature first): what the limits count."""
        if len(sizes) < 4:
            raise ProtocolError("bad_request", f"expected signature, header, parent_header and content; got {len(sizes)} parts")
        if len(sizes) - 4 > self.max_buffers:
            raise ProtocolError("too_large", f"{len(sizes) - 4} buffers; the limit is {self.max_buffers}")
        for name, size in zip(("header", "parent_header", "content"), sizes[1:4], strict=True):
            if size > self.max_part_bytes:
                raise ProtocolError("too_large", f"{name} is {size} bytes; the limit is {self.max_part_bytes}", name)
        if sum(sizes) > self.max_message_bytes:
            raise ProtocolError("too_large", f"message is {sum(sizes)} bytes; the limit is {self.max_message_bytes}")

    def check_parts(self, parts: list) -> None:
        """The signed parts of a message about to be sent (see ``pack``), before it is signed."""
        self.check_frames([SIGNATURE_BYTES, *(memoryview(p).nbytes for p in parts)])

    @classmethod
    def from_dict(cls, data: dict) -> Limits:
        """From ``hello``'s ``limits`` map, ignoring keys a later minor version may add."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


# --- header and message --------------------------------------------------------------------------


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# RFC 3339 (a profile of ISO 8601): extended format, calendar dates, a UTC offset; "T" and "Z" in either case
RFC3339 = re.compile(r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(\.\d+)?([Zz]|[+-](?:[01]\d|2[0-3]):[0-5]\d)?",
                     re.ASCII)


def parse_date(text: str) -> float:
    """Seconds since the epoch from an RFC 3339 date such as ``2025-01-31T12:00:00.000000Z``; other
    ISO 8601 forms (week or ordinal dates, the basic format without separators) are refused."""
    match = RFC3339.fullmatch(text)
    if match is None:
        raise ProtocolError("bad_request", f"header.date: {text!r} is not an RFC 3339 date", "header.date")
    date, clock, fraction, offset = match.groups()
    if offset is None:
        raise ProtocolError("bad_request", "header.date: a UTC offset (such as Z) is required", "header.date")
    offset = "+00:00" if offset in "Zz" else offset
    try:  # datetime takes at most microseconds
        moment = datetime.fromisoformat(f"{date}T{clock}{(fraction or '')[:7]}{offset}")
    except ValueError:  # e.g. month 13
        raise ProtocolError("bad_request", f"header.date: {text!r} is not a valid date", "header.date") from None
    return moment.timestamp()


@dataclass(frozen=True)
class Header:
    msg_id: str
    msg_type: str
    session: str
    date: str
    version: str = PROTOCOL_VERSION

    @classmethod
    def new(cls, msg_type: str, session: str) -> Header:
        return cls(uuid.uuid4().hex, msg_type, session, now_iso())

    def to_dict(self) -> dict:
        return {"msg_id": self.msg_id, "msg_type": self.msg_type, "session": self.session,
                "date": self.date, "version": self.version}

    @classmethod
    def from_dict(cls, data, name: str = "header") -> Header:
        if not isinstance(data, dict):
            raise ProtocolError("bad_request", f"{name}: expected a map", name)
        unknown = sorted(set(data) - {"msg_id", "msg_type", "session", "date", "version"})
        if unknown:
            raise ProtocolError("bad_request", f"{name}.{unknown[0]}: unknown header field", f"{name}.{unknown[0]}")
        for key in ("msg_id", "msg_type", "session", "date", "version"):
            value = data.get(key)
            if not isinstance(value, str) or not value or len(value) > 256:
                raise ProtocolError("bad_request", f"{name}.{key}: expected a non-empty string", f"{name}.{key}")
        return cls(**data)


@dataclass
class Message:
    header: Header
    parent_header: Header | None = None
    content: dict = field(default_factory=dict)
    buffers: list = field(default_factory=list)  # bytes-like: bytes, memoryview, zmq.Frame

    @property
    def msg_type(self) -> str:
        return self.header.msg_type


def sign(key: bytes, parts) -> bytes:
    """Hex HMAC-SHA256 over each part preceded by its length as 8 bytes big-endian."""
    mac = hmac.new(key, digestmod=hashlib.sha256)
    for part in parts:
        view = memoryview(part)
        mac.update(view.nbytes.to_bytes(8, "big"))
        mac.update(view)
    return mac.hexdigest().encode("ascii")


def pack(message: Message) -> list:
    """The parts a message's signature covers: the three maps packed, then the buffers (not copied)."""
    parent = message.parent_header.to_dict() if message.parent_header else {}
    return [packb(message.header.to_dict()), packb(parent), packb(message.content), *message.buffers]


def encode(message: Message, key: bytes, limits: Limits | None = None) -> list:
    """Frames to send after any routing frames: delimiter, signature, three maps, buffers. With the
    receiver's ``limits``, a message it would refuse (or whose connection it would drop) is a
    ``too_large`` ProtocolError instead, raised before signing."""
    parts = pack(message)
    if limits is not None:
        limits.check_parts(parts)
    return [DELIMITER, sign(key, parts), *parts]


def packb(value) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


def split_routing(frames: list) -> tuple[list, list]:
    """(routing frames, message frames); without a delimiter the first frame is taken as routing."""
    for i, frame in enumerate(frames[: MAX_ROUTING_FRAMES + 1]):
        if memoryview(frame).nbytes == len(DELIMITER) and bytes(frame) == DELIMITER:
            return frames[:i], frames[i + 1 :]
    return frames[:1], []


def decode(frames: list, key: bytes, limits: Limits = Limits()) -> Message:
    """Check sizes and signature, then unpack. ``frames`` start with the signature."""
    limits.check_frames([memoryview(f).nbytes for f in frames])
    signature, parts = frames[0], frames[1:]
    if memoryview(signature).nbytes != SIGNATURE_BYTES or not hmac.compare_digest(bytes(signature), sign(key, parts)):
        raise ProtocolError("bad_signature", "the signature is missing or does not match the message")
    header = Header.from_dict(_unpack(parts[0], "header"))
    parent = _unpack(parts[1], "parent_header")
    content = _unpack(parts[2], "content")
    if not isinstance(content, dict):
        raise ProtocolError("bad_request", "content: expected a map", "content")
    parent_header = None if parent == {} else Header.from_dict(parent, "parent_header")
    return Message(header, parent_header, content, list(parts[3:]))


def unverified_header(frames: list, part: str = "header") -> Header | None:
    """The header (or ``parent_header``) of a message being refused, if readable: a refusal names the
    request it answers, and a client ends its wait for a reply it cannot read."""
    index = 1 if part == "header" else 2
    if len(frames) <= index or memoryview(frames[index]).nbytes > 4096:
        return None
    try:
        return Header.from_dict(_unpack(frames[index], part), part)
    except ProtocolError:
        return None


def _unpack(part, name: str):
    try:
        return msgpack.unpackb(memoryview(part), raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        raise ProtocolError("bad_request", f"{name}: not valid msgpack ({type(exc).__name__})", name) from None


def check_version(header: Header) -> None:
    """Same major version: minor versions only add optional fields and message types."""
    if not VERSION_FORMAT.fullmatch(header.version) or header.version.split(".")[0] != PROTOCOL_VERSION.split(".")[0]:
        raise ProtocolError(
            "unsupported_version", f"header.version {header.version!r}; this engine speaks {PROTOCOL_VERSION}", "header.version"
        )


class ReplayGuard:
    """Refuses a msg_id seen before, and any date further than the window from now."""

    def __init__(self, window_s: float, max_entries: int = 1_000_000):
        self.window_s, self.max_entries = window_s, max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    def check(self, header: Header, now: float | None = None) -> None:
        now = time.time() if now is None else now
        sent = parse_date(header.date)
        if abs(now - sent) > self.window_s:
            raise ProtocolError("replayed", f"header.date is {now - sent:+.1f} s from the engine's clock; "
                                f"the window is {self.window_s:g} s", "header.date")
        while self._seen and (next(iter(self._seen.values())) < now or len(self._seen) >= self.max_entries):
            self._seen.popitem(last=False)
        if header.msg_id in self._seen:
            raise ProtocolError("replayed", f"msg_id {header.msg_id} was already received", "header.msg_id")
        # an id only needs remembering while its date could still pass the window check
        self._seen[header.msg_id] = max(now, sent) + self.window_s


# --- request content schemas ---------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    """One content field of a request: ``kind`` is one of the checkers below; nil means absent."""

    kind: str
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    above: float | None = None  # an exclusive minimum
    choices: tuple[str, ...] | None = None


SAMPLERS = ("pingpong", "euler", "dpmpp")
MAX_BATCH_SIZE = 64
MAX_SEED = 2**63 - 1 - MAX_BATCH_SIZE  # clips take seeds seed..seed+batch_size-1, which must fit in an int64
MIN_REPLY_BYTES = 1 << 16  # a client must take at least this much in one reply (hello max_message_bytes)
# Request ids become file names (output_dir) and log keys: no separators, no surprises.
REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_GENERATION = {
    "request_id": Field("id"),
    "model": Field("name"),
    "prompt": Field("str"),
    "negative_prompt": Field("str"),
    "steps": Field("int", minimum=1, maximum=1000),
    "cfg_scale": Field("number", minimum=0, maximum=25.0),  # sa3_engine.generation.request.MAX_CFG_SCALE
    "seed": Field("int", minimum=-1, maximum=MAX_SEED),
    "batch_size": Field("int", minimum=1, maximum=MAX_BATCH_SIZE),
    "loras": Field("loras"),
    "sampler": Field("str", choices=SAMPLERS),
    "output_dir": Field("name"),
}

_DURATION = Field("number", minimum=0.01, maximum=MAX_DURATION_S)

REQUESTS: dict[str, dict[str, Field]] = {
    "hello": {"client": Field("str"), "max_message_bytes": Field("int", minimum=MIN_REPLY_BYTES)},
    "models": {},
    "load": {"model": Field("name", required=True)},
    "unload": {"model": Field("name", required=True)},
    "generate": {**_GENERATION, "duration": _DURATION},
    "inpaint": {
        **_GENERATION,
        "audio": Field("audio", required=True),
        "duration": _DURATION,
        "mask_start": Field("seconds", required=True),
        "mask_end": Field("seconds", required=True),
        "splice": Field("bool"),
    },
    "extend": {
        **_GENERATION,
        "audio": Field("audio", required=True),
        "duration": Field("number", required=True, minimum=0.01, maximum=MAX_DURATION_S),
        "splice": Field("bool"),
    },
    "variation": {
        **_GENERATION,
        "audio": Field("audio", required=True),
        "duration": _DURATION,
        "init_noise_level": Field("number", above=0, maximum=1),  # 0 would leave nothing to sample
    },
    "cancel": {"request_id": Field("id", required=True)},
    "status": {},
    "result": {"request_id": Field("id", required=True), "wait": Field("bool")},
    "ping": {},
    "shutdown": {},
}
GENERATION_TYPES = ("generate", "inpaint", "extend", "variation")


def validate_request(message: Message) -> dict:
    """The request's content with nils dropped, or ProtocolError naming the first bad field."""
    schema = REQUESTS.get(message.msg_type)
    if schema is None:
        raise ProtocolError("unknown_type", f"header.msg_type: {message.msg_type!r} is not one of {sorted(REQUESTS)}",
                            "header.msg_type")
    for name in message.content:  # a typo is refused even when nil
        if name not in schema:
            raise ProtocolError("bad_request", f"content.{name}: unknown field for {message.msg_type}", f"content.{name}")
    content = {k: v for k, v in message.content.items() if v is not None}
    for name, spec in schema.items():
        if name not in content:
            if spec.required:
                raise ProtocolError("bad_request", f"content.{name}: required for {message.msg_type}", f"content.{name}")
            continue
        problem = _CHECKS[spec.kind](content[name], spec, message.buffers)
        if problem:
            raise ProtocolError("bad_request", f"content.{name}: {problem}", f"content.{name}")
    if "mask_start" in content:
        _check_regions(content["mask_start"], content["mask_end"])
    _check_buffers_used(content.get("audio"), message.buffers)
    if message.msg_type in ("inpaint", "variation"):
        _check_source_fits(content.get("audio"), content.get("duration"))
    return content


def _check_buffers_used(audio, buffers: list) -> None:
    """Every buffer sent is the one the audio map refers to: a stray one is a client's mistake."""
    used = 1 if isinstance(audio, dict) and "buffer" in audio else 0
    if len(buffers) != used:
        raise ProtocolError("bad_request", f"buffers: {len(buffers)} sent, {used} referred to by an audio map",
                            "buffers")


def _check_source_fits(audio, duration) -> None:
    """An inpaint or variation result is never shorter than its source (known here when sent as a buffer)."""
    if duration is None or not isinstance(audio, dict) or "frames" not in audio:
        return
    rate = audio["sample_rate"]
    # longer by more than two samples at the source's rate and at any model's (16 kHz or more): the pipeline
    # refuses all of these, and the few samples of rounding in between are left to it
    if audio["frames"] / rate > duration + 2 / rate + 2 / 16000:
        raise ProtocolError("bad_request", f"content.duration: {duration:g} s is shorter than the source "
                            f"({audio['frames'] / rate:g} s)", "content.duration")


def _check_regions(starts, ends) -> None:
    """Inpaint regions pair up (equal counts) and each starts before it ends."""
    starts, ends = (v if isinstance(v, list) else [v] for v in (starts, ends))
    if len(starts) != len(ends):
        raise ProtocolError("bad_request", f"content.mask_end: {len(ends)} ends for {len(starts)} starts",
                            "content.mask_end")
    for i, (start, end) in enumerate(zip(starts, ends, strict=True)):
        if end <= start:
            raise ProtocolError("bad_request", f"content.mask_end: region {i} ends ({end:g} s) before it starts "
                                f"({start:g} s)", "content.mask_end")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _range(value, spec: Field) -> str | None:
    if spec.above is not None and value <= spec.above:
        return f"{value!r} must be above {_bound(spec.above)}"
    if spec.minimum is not None and value < spec.minimum:
        return f"{value!r} is below the minimum {_bound(spec.minimum)}"
    if spec.maximum is not None and value > spec.maximum:
        return f"{value!r} is above the maximum {_bound(spec.maximum)}"
    return None


def _bound(limit: float) -> str:
    return str(limit) if isinstance(limit, int) else f"{limit:g}"  # integers exactly (a seed's 2**63 - 65)


def _check_str(value, spec, buffers):
    if not isinstance(value, str):
        return f"expected a string, got {type(value).__name__}"
    if spec.choices is not None and value not in spec.choices:
        return f"{value!r} is not one of {list(spec.choices)}"
    return None


def _check_name(value, spec, buffers):
    if not isinstance(value, str) or not value or "\0" in value:
        return "expected a non-empty string without NUL characters"
    return None


def _check_id(value, spec, buffers):
    if not isinstance(value, str) or not REQUEST_ID.fullmatch(value):
        return "expected 1-128 characters from A-Z a-z 0-9 _ . - (starting with a letter or digit)"
    return None


def _check_bool(value, spec, buffers):
    return None if isinstance(value, bool) else f"expected true or false, got {type(value).__name__}"


def _check_int(value, spec, buffers):
    if not isinstance(value, int) or isinstance(value, bool):
        return f"expected an integer, got {type(value).__name__}"
    return _range(value, spec)


def _check_number(value, spec, buffers):
    if not _is_number(value):
        return f"expected a finite number, got {value!r}"
    return _range(value, spec)


def _check_seconds(value, spec, buffers):
    values = value if isinstance(value, list) else [value]
    if not values or not all(_is_number(v) and v >= 0 for v in values):
        return "expected seconds >= 0, or a non-empty list of them"
    return None


def _check_loras(value, spec, buffers):
    ok = isinstance(value, list) and all(
        isinstance(item, list) and len(item) == 2 and not _check_name(item[0], None, None) and _is_number(item[1])
        for item in value
    )
    return None if ok else "expected a list of [path, strength] pairs"


def _check_audio(value, spec, buffers):
    if not isinstance(value, dict):
        return "expected an audio map"
    if "path" in value:
        if set(value) != {"path"} or not isinstance(value["path"], str):
            return "a path audio map is {path: str}"
        if "\0" in value["path"] or not os.path.isabs(value["path"]):
            raise ProtocolError("bad_request", "content.audio.path: must be an absolute path (without NUL characters)",
                                "content.audio.path")
        return None
    try:
        audio_shape(value, buffers)
    except ProtocolError as exc:
        return exc.message
    return None


_CHECKS = {"str": _check_str, "name": _check_name, "id": _check_id, "bool": _check_bool, "int": _check_int, "number": _check_number,
           "seconds": _check_seconds, "loras": _check_loras, "audio": _check_audio}


# --- audio <-> buffers ---------------------------------------------------------------------------

AUDIO_KEYS = {"buffer", "sample_rate", "channels", "frames"}


def audio_to_buffer(audio: np.ndarray, sample_rate: int, index: int) -> tuple[dict, memoryview]:
    """(audio map, buffer) for (channels, frames) audio: planar little-endian float32, no copy if already so."""
    if audio.ndim != 2:
        raise ValueError(f"audio: expected (channels, frames), got shape {audio.shape}")
    data = np.ascontiguousarray(audio, dtype="<f4")
    descriptor = {"buffer": index, "sample_rate": int(sample_rate), "channels": int(data.shape[0]),
                  "frames": int(data.shape[1])}
    return descriptor, memoryview(data).cast("B")


def audio_shape(descriptor: dict, buffers: list) -> tuple[int, int, int]:
    """(sample_rate, channels, frames) after checking the map against its buffer."""
    if set(descriptor) != AUDIO_KEYS:
        raise ProtocolError("bad_request", f"an audio map has exactly the keys {sorted(AUDIO_KEYS)} (or just path)")
    if not all(isinstance(descriptor[k], int) and not isinstance(descriptor[k], bool) for k in AUDIO_KEYS):
        raise ProtocolError("bad_request", "audio map values must be integers")
    index, rate, channels, frames = (descriptor[k] for k in ("buffer", "sample_rate", "channels", "frames"))
    if not 0 <= index < len(buffers):
        raise ProtocolError("bad_request", f"buffer {index} does not exist ({len(buffers)} buffers sent)")
    low, high = SAMPLE_RATES
    if not (low <= rate <= high and 1 <= channels <= 8 and 1 <= frames <= MAX_DURATION_S * rate):
        raise ProtocolError("bad_request", f"sample_rate must be {low}..{high}, channels 1..8 and frames 1 to "
                            f"{MAX_DURATION_S} s")
    size = memoryview(buffers[index]).nbytes
    if size != channels * frames * 4:
        raise ProtocolError("bad_request", f"buffer {index} holds {size} bytes; {channels}x{frames} float32 needs "
                            f"{channels * frames * 4}")
    return rate, channels, frames


def audio_from_buffers(descriptor: dict, buffers: list) -> tuple[int, np.ndarray]:
    """(sample_rate, audio (channels, frames) float32) viewing the buffer, without copying."""
    rate, channels, frames = audio_shape(descriptor, buffers)
    data = np.frombuffer(buffers[descriptor["buffer"]], dtype="<f4").reshape(channels, frames)
    return rate, data.astype(np.float32, copy=False)
