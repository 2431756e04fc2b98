"""Where the no-op job of every peer writes down when it started and when it finished.

The job calls :func:`noop`: two ``time.time()`` readings and one ``write(2)`` of 16 bytes
(two little-endian doubles) to a file of its own process, ``<pid>.bin`` in the directory named
by ``BENCH_PEERS_TIMES``, opened once per process with ``O_APPEND``. Nothing is buffered in the
process, so the record survives however the worker is stopped, and a 16-byte append is atomic,
so threads of one process share the file safely. The driver counts records by file size and
reads them all at the end of a phase.
"""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

ENV = "BENCH_PEERS_TIMES"
RECORD = struct.Struct("<dd")

_lock = threading.Lock()
_fd: int | None = None
_pid: int | None = None


def _open() -> int:
    """The record file of this process (opened again after a fork)."""
    global _fd, _pid
    with _lock:
        if _pid != os.getpid() or _fd is None:
            directory = os.environ[ENV]
            path = os.path.join(directory, f"{os.getpid()}.bin")
            _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            _pid = os.getpid()
        return _fd


def noop() -> None:
    """The job's whole body: note its start and finish times."""
    start = time.time()
    finish = time.time()
    fd = _fd if _pid == os.getpid() and _fd is not None else _open()
    os.write(fd, RECORD.pack(start, finish))


def count(directory: Path) -> int:
    """How many jobs have written their record into ``directory``."""
    total = 0
    with os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(".bin"):
                total += entry.stat().st_size // RECORD.size
    return total


def read(directory: Path) -> list[tuple[float, float]]:
    """Every ``(start, finish)`` record in ``directory``, in no particular order."""
    records: list[tuple[float, float]] = []
    for path in directory.glob("*.bin"):
        data = path.read_bytes()
        usable = len(data) - len(data) % RECORD.size
        records.extend(RECORD.iter_unpack(data[:usable]))
    return records
