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
