"""The soak's ledger: one row per run of a soak task, written by the task itself.

A run inserts its row (job id, attempt, process ids, start time) when its code begins and
sets its end time and how it ended when its code stops, for whatever reason. A run in a
process killed with SIGKILL never writes its end; the driver knows when it killed which pid.

The ledger is a SQLite file of its own, for both store backends, not a table in the jobs
database: on SQLite, a table in the jobs file would put every task's writes on the one
write lock that the store's claims and heartbeats take (and async tasks would wait for it on
the worker's event loop, delaying its fence): the test would then measure contention it
made itself. A file of its own keeps the ledger off what is under test, and one code path
serves both backends. Times are ``time.time()`` (CLOCK_REALTIME, one clock for every process
on the machine). Commits use ``synchronous=OFF``: a killed process loses nothing the OS was
given, and only a machine crash could, which the soak does not do.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

#: The environment variable naming the ledger file in worker processes.
LEDGER_ENV = "SOAK_LEDGER"

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    ppid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    ending TEXT
)
"""


@dataclass(frozen=True)
class LedgerRun:
    """One run of a soak task, as the ledger holds it (no end: the process died first)."""

    job_id: str
    attempt: int
    pid: int
    ppid: int
    started_at: float
    ended_at: float | None
    ending: str | None


def create_ledger(path: Path) -> None:
    """Create an empty ledger (WAL mode, which the file keeps)."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)


def read_ledger(path: Path) -> list[LedgerRun]:
    """Every run the ledger holds, in the order they started."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        rows = conn.execute(
            "SELECT job_id, attempt, pid, ppid, started_at, ended_at, ending FROM runs"
            " ORDER BY started_at, id"
        ).fetchall()
    return [LedgerRun(*row) for row in rows]


class LedgerWriter:
    """The ledger as the tasks of one process write it: one connection, one lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout = 30000")
            conn.execute("PRAGMA synchronous = OFF")
            self._conn = conn
        return self._conn

    def start(self, job_id: str, attempt: int, at: float) -> int:
        """Record that a run of ``job_id`` began at ``at``; return its row id."""
        with self._lock:
            cursor = self._connection().execute(
                "INSERT INTO runs (job_id, attempt, pid, ppid, started_at) VALUES (?, ?, ?, ?, ?)",
                (job_id, attempt, os.getpid(), os.getppid(), at),
            )
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def end(self, run_id: int, ending: str, at: float) -> None:
        """Record that a run stopped at ``at``, and how."""
        with self._lock:
            self._connection().execute(
                "UPDATE runs SET ended_at = ?, ending = ? WHERE id = ?", (at, ending, run_id)
            )


_writer: LedgerWriter | None = None
_writer_lock = threading.Lock()


def writer() -> LedgerWriter:
    """This process's writer, on the file named by ``$SOAK_LEDGER``."""
    global _writer
    with _writer_lock:
        if _writer is None:
            path = os.environ.get(LEDGER_ENV)
            if not path:
                raise RuntimeError(f"${LEDGER_ENV} names no ledger file")
            _writer = LedgerWriter(path)
        return _writer
