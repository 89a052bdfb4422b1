"""Files the engine must remove when it stops, written down where the next engine finds them.

The engine lock file (``<connection file>.lock``, docs/protocol.md section 1) is the list: while an
engine holds the lock, the file holds its pid and, one JSON string a line, the paths it will remove on
exit (its ipc sockets, output WAVs being written). An engine killed by SIGKILL removes nothing; the next
engine to take the lock (which proves the previous holder dead) removes what that one listed, and only
files of the kinds it lists (sockets, hidden temporary files).
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

from bridge import connection

log = logging.getLogger("sa3.engine")


class Leftovers:
    def __init__(self) -> None:
        self._fd: int | None = None
        self._paths: set[str] = set()
        self._lock = threading.Lock()  # the I/O thread lists sockets, the worker its output files

    def take_over(self, lock_fd: int | None, connection_path: Path) -> list[str]:
        """Start listing into the lock file ``lock_fd`` (held: None without flock, then nothing is listed)
        after removing what its previous holder left; returns the paths removed."""
        if lock_fd is None:
            return []
        self._fd = lock_fd
        lines = os.pread(lock_fd, 1 << 20, 0).decode("utf-8", "replace").splitlines()
        removed = []
        if lines and lines[0].startswith("pid ") and lines[0][4:].isdigit():
            pid = int(lines[0][4:])
            connection.remove(connection_path, pid)  # its connection file, if it still names it
            stray = connection_path.with_name(f".{connection_path.name}.{pid}.tmp")
            removed += [str(p) for p in _remove([stray], stat.S_ISREG)]
            for line in lines[1:]:
                try:
                    path = Path(json.loads(line))
                except (ValueError, TypeError):
                    continue  # cut short by the kill
                removed += [str(p) for p in _remove_listed(path)]
        if removed:
            log.info("removed what a killed engine left: %s", ", ".join(removed))
        self._write()
        return removed

    def add(self, path: str | os.PathLike) -> None:
        with self._lock:
            self._paths.add(str(path))
            self._write()

    def discard(self, path: str | os.PathLike) -> None:
        with self._lock:
            self._paths.discard(str(path))
            self._write()

    @contextmanager
    def listed(self, path: str | os.PathLike):
        """``path`` is listed for as long as the block runs (a temporary file being written)."""
        self.add(path)
        try:
            yield path
        finally:
            self.discard(path)

    def _write(self) -> None:
        if self._fd is None:
            return
        text = f"pid {os.getpid()}\n" + "".join(json.dumps(p) + "\n" for p in sorted(self._paths))
        data = text.encode()
        os.pwrite(self._fd, data, 0)
        os.ftruncate(self._fd, len(data))


def _remove_listed(path: Path) -> list[Path]:
    """A listed socket, or a listed hidden temporary file with the ones named after it (``.<name>.*``,
    which ``audio.atomic_path`` makes while writing into it)."""
    if not path.name.startswith("."):
        return _remove([path], stat.S_ISSOCK)
    try:
        siblings = [p for p in path.parent.iterdir() if p.name.startswith(f".{path.name}.")]
    except OSError:
        siblings = []
    return _remove([path, *siblings], stat.S_ISREG)


def _remove(paths: list[Path], kind) -> list[Path]:
    removed = []
    for path in paths:
        try:
            if kind(os.lstat(path).st_mode):
                path.unlink()
                removed.append(path)
        except OSError:
            pass
    return removed
