"""``sa3 host REQUEST.json``: the JSON host bridge a DAW script calls (``docs/host-bridge.md``); progress as JSON
lines on stdout, SIGINT/SIGTERM cancel."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from plugin_shell.hostbridge.run import BridgeHost, error_reply, handle, write_reply

EXIT_OK, EXIT_ERROR, EXIT_CANCELLED = 0, 1, 3  # documented in docs/host-bridge.md


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("request", type=Path, help="the request JSON (docs/host-bridge.md); '-' reads stdin")
    parser.add_argument("--reply", type=Path, help="also write the reply here (.json, or .lua for a Lua table)")


def run(args: argparse.Namespace) -> int:
    def emit(event: dict) -> None:
        print(json.dumps(event), flush=True)

    try:
        text = sys.stdin.read() if str(args.request) == "-" else args.request.read_text()
        data = json.loads(text)
    except (OSError, json.JSONDecodeError) as error:
        reply = error_reply("request", f"cannot read the request: {error}")
    else:
        hosts: list[BridgeHost] = []

        def stop(signum, frame) -> None:
            for host in hosts:
                host.cancel()

        previous = {s: signal.signal(s, stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            reply = handle(data, emit=emit, on_host=hosts.append)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
    if args.reply:
        write_reply(args.reply, reply)
    emit({"event": "reply", **reply})
    if reply["ok"]:
        return EXIT_OK
    return EXIT_CANCELLED if reply["cancelled"] else EXIT_ERROR
