"""Reading the jobs table straight from the database that test processes share (never through
the API): SQLite read-only in autocommit, or PostgreSQL in the test's schema."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from backends import Database


@dataclass(frozen=True)
class Row:
    """The columns of one job this test looks at, as the database holds them."""

    id: str
    status: str
    cancel_requested: bool
    progress_current: float
    params: dict[str, Any]
    result: Any
    attempt: int
    attempt_errors: list[Any]
    worker: str | None


class DatabaseReader:
    """Reads jobs straight from the database the processes share (never through the API)."""

    COLUMNS = (
        "id, status, cancel_requested, progress_current, params, result, attempt, "
        "attempt_errors, worker"
    )

    def __init__(self, database: Database) -> None:
        self.database = database
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is not None:
            return self._conn
        if self.database.pg_schema is None:
            path = self.database.database_url.removeprefix("sqlite:///")
            # Autocommit and read-only: every query sees the latest committed state.
            self._conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            import psycopg

            self._conn = psycopg.connect(self.database.database_url, autocommit=True)
        return self._conn

    def _query(self, where: str, args: Sequence[Any]) -> list[Row]:
        schema = self.database.pg_schema
        if schema is None:
            sql = f"SELECT {self.COLUMNS} FROM jobs WHERE {where.replace('%s', '?')}"
        else:
            sql = f'SELECT {self.COLUMNS} FROM "{schema}".jobs WHERE {where}'
        rows = self._connection().execute(sql, tuple(args)).fetchall()
        return [_row(values) for values in rows]

    def jobs(self, ids: Sequence[str]) -> dict[str, Row]:
        """The jobs with these ids that exist, by id."""
        if not ids:
            return {}
        if self.database.pg_schema is None:
            marks = ", ".join("?" for _ in ids)
            rows = self._query(f"id IN ({marks})", list(ids))
        else:
            rows = self._query("id = ANY(%s)", [list(ids)])
        return {row.id: row for row in rows}

    def with_prefix(self, prefix: str) -> list[Row]:
        """Every job whose id starts with ``prefix``."""
        return self._query("id LIKE %s", [f"{prefix}%"])

    def status_counts(self) -> dict[str, int]:
        """How many jobs of each status the database holds."""
        schema = self.database.pg_schema
        table = "jobs" if schema is None else f'"{schema}".jobs'
        rows = (
            self._connection()
            .execute(f"SELECT status, count(*) FROM {table} GROUP BY status")
            .fetchall()
        )
        return {status: int(n) for status, n in rows}

    def close(self) -> None:
        """Close the connection, if one was opened."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _json(value: Any) -> Any:
    """A JSON column: text on SQLite, already decoded on PostgreSQL."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _row(values: Sequence[Any]) -> Row:
    job_id, status, cancel, current, params, result, attempt, errors, worker = values
    return Row(
        id=job_id,
        status=status,
        cancel_requested=bool(cancel),
        progress_current=float(current),
        params=_json(params),
        result=_json(result),
        attempt=int(attempt),
        attempt_errors=_json(errors),
        worker=worker,
    )


def worker_pid(worker: str | None) -> int:
    """The process id in a worker name ``host:pid:n``."""
    assert worker is not None
    _host, pid, _n = worker.rsplit(":", 2)
    return int(pid)
