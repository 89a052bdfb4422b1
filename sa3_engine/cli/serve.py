"""``sa3 serve``: run the persistent engine (also ``python -m sa3_engine.cli.serve``, as ``bridge.spawn`` starts it)."""

from __future__ import annotations

import argparse
import logging
import sys

import zmq

from bridge import connection, curve
from bridge.protocol import Limits, ProtocolError
from sa3_engine.engine import security
from sa3_engine.engine.server import Engine, EngineConfig, EngineRunning
from sa3_engine.runtime.device import COMPILE_HELP, PRECISION_HELP, PRECISIONS


def add_arguments(parser: argparse.ArgumentParser, command: str) -> None:
    parser.add_argument("--model", dest="models", action="append", default=[], metavar="ID_OR_DIR",
                        help="load at start-up and keep resident (repeatable); the first is the default model")
    parser.add_argument("--models-dir", help="folder holding model folders (also SA3_MODELS_DIR)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU; on macOS the DiT runs in CoreML when exported), "
                        "cuda, cuda:N, mps, cpu or coreml")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    parser.add_argument("--compile", action="store_true", help=COMPILE_HELP)
    parser.add_argument("--dtype", default="auto", help="the DiT's: auto (--precision's), float32, float16, bfloat16")
    parser.add_argument("--autoencoder-dtype", default="auto",
                        help="the SAME autoencoder's dtype: auto (--precision's), float32, float16, bfloat16")
    parser.add_argument("--transport", choices=connection.TRANSPORTS, default=connection.DEFAULT_TRANSPORT,
                        help="ipc: Unix sockets beside the connection file (the default on POSIX); tcp: a port")
    parser.add_argument("--ip", default="127.0.0.1", help="address to listen on (tcp); loopback unless --curve")
    parser.add_argument("--port", type=int, help=f"tcp: requests on PORT, events on PORT+1 (default with --curve "
                        f"{security.DEFAULT_PORT}, so pairings survive restarts; else any free ports; 0: any free ports)")
    parser.add_argument("--curve", action="store_true", help="CurveZMQ: encrypt both sockets and admit only the "
                        "client keys of the allow-list (sa3 engine keys / pair); needed for a non-loopback --ip")
    parser.add_argument("--keys-dir", help=f"the engine's identity and allow-list live in KEYS_DIR/engine (default: "
                        f"${curve.KEYS_ENV} or ~/.config/sa3)")
    parser.add_argument("--memory-budget-gb", type=float,
                        help="unload least recently used models when their parameters exceed this")
    parser.add_argument("--connection-file", help=f"where to write the connection file (default: ${connection.CONNECTION_ENV} "
                        "or the per-user runtime folder)")
    parser.add_argument("--max-message-mb", type=float, default=Limits.max_message_bytes / 2**20,
                        help="largest message accepted, buffers included")
    parser.add_argument("--max-batch", type=int, default=8, help="most compatible requests run as one pipeline call")
    parser.add_argument("--retention-s", type=float, default=600.0, help="how long finished results can be fetched again")
    parser.add_argument("--retention-mb", type=float, default=EngineConfig.retention_bytes / 2**20,
                        help="most result audio kept for fetching again; the oldest is forgotten first")
    parser.add_argument("--max-session-jobs", type=int, default=EngineConfig.max_session_jobs,
                        help="most jobs one client session may have queued (more are refused: busy)")
    parser.add_argument("--max-queued-jobs", type=int, default=EngineConfig.max_queued_jobs,
                        help="most jobs queued in all (more are refused: busy)")
    parser.add_argument("--max-queued-mb", type=float, default=EngineConfig.max_queued_bytes / 2**20,
                        help="most source audio (sent as buffers) queued jobs may hold (more is refused: busy)")
    parser.add_argument("--parent-pid", type=int, help="stop once this process, the engine's parent, has exited "
                        "(POSIX; bridge.spawn passes its own pid)")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def config_from_args(args: argparse.Namespace) -> EngineConfig:
    if args.max_batch < 1:
        raise ValueError(f"--max-batch: must be at least 1, got {args.max_batch}")
    for name in ("max_message_mb", "retention_mb", "max_session_jobs", "max_queued_jobs", "max_queued_mb"):
        if getattr(args, name) <= 0:
            raise ValueError(f"--{name.replace('_', '-')}: must be positive, got {getattr(args, name)}")
    port = args.port if args.port is not None else (security.DEFAULT_PORT if args.curve else None)
    if port is not None and not 0 <= port <= 65534:
        raise ValueError(f"--port: {port} is not a tcp port (events use the next one)")
    return EngineConfig(models=args.models, models_dir=args.models_dir, device=args.device, dtype=args.dtype,
                        autoencoder_dtype=args.autoencoder_dtype, precision=args.precision,
                        compile=args.compile,
                        transport=args.transport, ip=args.ip, port=port or None, curve=args.curve, keys_dir=args.keys_dir,
                        memory_budget_gb=args.memory_budget_gb, connection_file=args.connection_file,
                        limits=Limits(max_message_bytes=int(args.max_message_mb * 2**20)),
                        max_batch=args.max_batch, retention_s=args.retention_s,
                        retention_bytes=int(args.retention_mb * 2**20), max_session_jobs=args.max_session_jobs,
                        max_queued_jobs=args.max_queued_jobs, max_queued_bytes=int(args.max_queued_mb * 2**20),
                        parent_pid=args.parent_pid)


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level, format="%(asctime)s sa3-engine %(levelname)s %(message)s", stream=sys.stderr)
    try:
        engine = Engine(config_from_args(args))
        return engine.serve()
    except (ValueError, OSError, zmq.ZMQError, ProtocolError, EngineRunning) as exc:
        print(f"sa3 serve: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m sa3_engine.cli.serve", description="the persistent SA3 engine")
    add_arguments(_parser, "serve")
    sys.exit(run(_parser.parse_args()))
