"""``sa3 engine``: talk to a running engine (``status``), and admit clients on other machines (CURVE).

On the engine machine: ``keys add/list/remove`` manage the allow-list of client keys; ``pair`` adds a
client and prints (or writes) its connection file, as a pasteable string. On the client machine:
``keys client`` makes (once) and prints this machine's client key; ``connect`` installs a pairing and
checks it. The work lives in ``bridge.curve`` and ``sa3_engine.engine.security``.

Two commands, client key made on the client (a stolen connection file alone does not get in):
    laptop$ sa3 engine keys client                        -> prints KEY
    engine$ sa3 engine pair --name laptop --client-key KEY -> prints sa3-pair1:...
    laptop$ sa3 engine connect sa3-pair1:...
or, the pairing making the client's keypair (then the connection file is the whole credential):
    engine$ sa3 engine pair --name laptop --new-client-key --out laptop.json   (copy it over, then connect)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bridge import connection, curve
from bridge.client import EngineClient, EngineError
from sa3_engine.engine import security

CONNECTION_HELP = f"default: ${connection.CONNECTION_ENV} or the per-user runtime folder"
KEYS_HELP = f"the key folder (default: ${curve.KEYS_ENV} or ~/.config/sa3)"


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    sub = parser.add_subparsers(dest="engine_command", required=True, metavar="SUBCOMMAND")
    status = sub.add_parser("status", help="what the running engine holds and does")
    status.add_argument("--connection-file", help=CONNECTION_HELP)
    status.add_argument("--json", action="store_true", help="print the status reply as JSON")
    status.add_argument("--timeout", type=float, default=5.0)
    status.add_argument("--keys-dir", help=KEYS_HELP)

    keys = sub.add_parser("keys", help="the allow-list of client keys (engine machine); this machine's client key")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="KEYS_COMMAND")
    listing = keys_sub.add_parser("list", help="the client keys allowed to use this machine's engine")
    add = keys_sub.add_parser("add", help="allow a client key")
    add.add_argument("key", help="the client's public key (40 Z85 characters, from `sa3 engine keys client`)")
    add.add_argument("--name", required=True, help="a word naming the client, e.g. laptop")
    remove = keys_sub.add_parser("remove", help="stop allowing a client (also on a running engine)")
    remove.add_argument("key", metavar="KEY_OR_NAME")
    client = keys_sub.add_parser("client", help="this machine's client key: made once, its public half printed")
    for p in (listing, add, remove, client):
        p.add_argument("--keys-dir", help=KEYS_HELP)

    pair = sub.add_parser("pair", help="allow a client and print its connection (engine machine, engine running)")
    pair.add_argument("--name", required=True, help="a word naming the client, e.g. laptop")
    made = pair.add_mutually_exclusive_group(required=True)
    made.add_argument("--client-key", help="the client's public key (`sa3 engine keys client` on the client)")
    made.add_argument("--new-client-key", action="store_true", help="make the client's keypair here; its secret goes "
                      "into the connection, which then lets anyone holding it in")
    pair.add_argument("--host", help="the address clients dial (default: the address the engine listens on)")
    pair.add_argument("--connection-file", help=f"the running engine's own file ({CONNECTION_HELP})")
    pair.add_argument("--out", help="also write the client's connection file here (mode 0600)")
    pair.add_argument("--keys-dir", help=KEYS_HELP)

    join = sub.add_parser("connect", help="install a pairing (client machine) and check that the engine answers")
    join.add_argument("pairing", help="the sa3-pair1:... string, or a connection file made by `sa3 engine pair`")
    join.add_argument("--out", help=f"where to write the connection file ({CONNECTION_HELP})")
    join.add_argument("--timeout", type=float, default=15.0)
    join.add_argument("--keys-dir", help=KEYS_HELP)


def run(args: argparse.Namespace) -> int:
    command = args.engine_command if args.engine_command != "keys" else f"keys {args.keys_command}"
    try:
        return COMMANDS[command](args)
    except EngineError as exc:
        print(f"sa3 engine {command}: {exc.message}", file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"sa3 engine {command}: {exc}", file=sys.stderr)
    return 1


def run_status(args: argparse.Namespace) -> int:
    with EngineClient(args.connection_file, timeout=args.timeout, retries=0, keys_dir=args.keys_dir) as client:
        status = client.status()
    print(json.dumps(status, indent=2) if args.json else format_status(status))
    return 0


def run_keys_list(args: argparse.Namespace) -> int:
    allow = security.AllowList(args.keys_dir)
    for key, name in allow.entries().items():
        print(f"{key} {name}")
    print(f"({allow.path})", file=sys.stderr)
    return 0


def run_keys_add(args: argparse.Namespace) -> int:
    security.AllowList(args.keys_dir).add(args.key, args.name)
    print(f"allowed {args.name}: {args.key}")
    return 0


def run_keys_remove(args: argparse.Namespace) -> int:
    gone = security.AllowList(args.keys_dir).remove(args.key)
    if not gone:
        raise ValueError(f"{args.key!r} is neither a key nor a name on the allow-list")
    print("removed " + ", ".join(gone) + " (a running engine refuses them from now on)")
    return 0


def run_keys_client(args: argparse.Namespace) -> int:
    print(curve.client_keypair(args.keys_dir).public)
    return 0


def run_pair(args: argparse.Namespace) -> int:
    engine_file = args.connection_file or connection.default_path()
    info = security.pair(args.name, args.client_key, engine_file, args.host, args.keys_dir)
    if args.out:
        connection.write(info, args.out)
        print(f"wrote {args.out}", file=sys.stderr)
    print(curve.pairing_string(info))
    secret = " It holds the client's secret key: treat it as a password." if info.curve_secretkey else ""
    print(f"allowed {args.name} ({info.curve_publickey}); on the client: sa3 engine connect <the line above>.{secret}",
          file=sys.stderr)
    return 0


def run_connect(args: argparse.Namespace) -> int:
    if args.pairing.startswith(curve.PAIRING_PREFIX):
        info = connection.from_dict(curve.parse_pairing(args.pairing), "the pairing string")
    else:
        info = connection.read(args.pairing)
    curve.keypair_for(info, args.keys_dir)  # refuses a pairing made for another client key, before writing
    out = Path(args.out) if args.out else connection.default_path()
    _check_not_a_local_engine(out)
    connection.write(info, out)
    with EngineClient(out, timeout=args.timeout, retries=0, keys_dir=args.keys_dir) as client:
        hello = client.hello()
    device = hello["device"]
    print(f"connected: engine pid {hello['pid']} on {info.request_endpoint}, {device.get('name', device['device'])}"
          f"/{hello['dtype']}; connection file {out}")
    return 0


def _check_not_a_local_engine(path: Path) -> None:
    """Never replace the connection file of an engine running on this machine."""
    try:
        existing = connection.read(path)
    except (FileNotFoundError, ValueError):
        return
    if not existing.remote and connection.engine_alive(path, existing):
        raise ValueError(f"{path} belongs to an engine running on this machine; pass --out (and use it with "
                         f"--connection-file or ${connection.CONNECTION_ENV})")


COMMANDS = {"status": run_status, "keys list": run_keys_list, "keys add": run_keys_add,
            "keys remove": run_keys_remove, "keys client": run_keys_client, "pair": run_pair, "connect": run_connect}


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
