"""What an engine leaves behind and lets others do to it (issue 8, defects 13 to 15): its log, its files
after a crash or a signal, its memory under a client that never reads. Real engine processes, tiny model."""

import re
import uuid

from test_engine import Raw

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
