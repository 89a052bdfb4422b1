"""Start an engine as a child process (``python -m sa3_engine.cli.serve``) and wait until it serves.

Used by the demo, the tests and the benchmarks; a DAW adapter can use it to start the engine on demand.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from bridge import connection

START_TIMEOUT_S = 120.0  # the first start may build the tiny model


class EngineProcess:
    def __init__(
        self, folder: Path, *args: str, models=("tiny-random",), connection_file: Path | None = None,
        threads: int | None = 1, exit_with_parent: bool = True,
    ):
        """``folder`` holds the connection file and logs; ``threads`` caps torch's threads (None: its default);
        ``exit_with_parent``: the engine stops by itself once this process is gone (even killed)."""
        self.folder = Path(folder)
        self.threads = threads
        self.connection_file = connection_file or self.folder / "engine.json"
        self.args = [a for m in models for a in ("--model", m)] + list(args)
        if exit_with_parent:
            self.args += ["--parent-pid", str(os.getpid())]
        self.proc: subprocess.Popen | None = None

    def start(self, wait: bool = True) -> EngineProcess:
        env = dict(os.environ)
        if self.threads is not None:
            env["OMP_NUM_THREADS"] = str(self.threads)
        env.pop(connection.CONNECTION_ENV, None)
        self.log_path = self.folder / f"engine-{time.monotonic_ns()}.log"  # one per start
        with open(self.log_path, "w") as log:  # the child keeps its own descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "sa3_engine.cli.serve", "--connection-file", str(self.connection_file),
                 *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env,
            )
        if wait:
            self.wait_ready()
        return self

    def wait_ready(self) -> connection.ConnectionInfo:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.output()}")
            try:
                info = connection.read(self.connection_file)
                if info.pid == self.proc.pid:
                    return info
            except (FileNotFoundError, ValueError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"engine did not start:\n{self.output()}")

    def info(self) -> connection.ConnectionInfo:
        return connection.read(self.connection_file)

    def output(self) -> str:
        """Everything the engine logged since its latest start (also once it has stopped)."""
        return self.log_path.read_text()

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EngineProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
