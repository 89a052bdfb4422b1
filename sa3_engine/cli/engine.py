"""``sa3 engine status``: what the running engine holds and does."""

from __future__ import annotations

import argparse
import json
import sys

from bridge import connection
from bridge.client import EngineClient, EngineError


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="engine_command", required=True, metavar="SUBCOMMAND")
    status = sub.add_parser("status", help="what the running engine holds and does")
    status.add_argument("--connection-file", help=f"default: ${connection.CONNECTION_ENV} or the per-user runtime folder")
    status.add_argument("--json", action="store_true", help="print the status reply as JSON")
    status.add_argument("--timeout", type=float, default=5.0)


def run(args: argparse.Namespace) -> int:
    try:
        with EngineClient(args.connection_file, timeout=args.timeout, retries=0) as client:
            status = client.status()
    except EngineError as exc:
        print(f"sa3 engine status: {exc.message}", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def format_status(status: dict) -> str:
    budget = status["memory"]["budget_bytes"]
    lines = [
        f"engine pid {status['pid']}, up {status['uptime_s']:.0f} s, {status['device']}/{status['dtype']}"
        + (f", precision {status['precision']}" if "precision" in status else "")
        + (", stopping" if status["stopping"] else ""),
        f"models ({_mb(status['memory']['used_bytes'])} of {_mb(budget) if budget else 'no'} budget):",
    ]
    for model in status["models"] or [{"model": "(none loaded)", "bytes": 0}]:
        default = "  [default]" if model["model"] == status["default_model"] else ""
        lines.append(f"  {model['model']}  {_mb(model['bytes'])}{default}")
    for job in status["running"]:
        p = job.get("progress", {})
        step = f" {p['stage']} {p['i']}/{p['n']}" if p else ""
        lines.append(f"running: {job['request_id']} {job['kind']} on {job['model']}{step}, {job['elapsed_s']:.1f} s")
    for job in status["queued"]:
        lines.append(f"queued #{job['position']}: {job['request_id']} {job['kind']} on {job['model']}")
    lines.append(f"retained results: {status['retained']}; active clients: {status['sessions']}")
    return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
