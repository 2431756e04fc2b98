"""Reaching a test database directly, beside the store: making jobs old without waiting, and
counting what a job left behind.

Retention tests need jobs that finished (or were created, or became runnable) days ago. The
store stamps those times itself, so the tests move them back here, in the database of either
backend, with a connection of their own (closed after each call). Blocking: call these from
async code with ``asyncio.to_thread``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from typing import Any

from backends import Database

#: The timestamp columns of a job that :func:`backdate` may set.
TIME_COLUMNS = frozenset(
    {"run_at", "created_at", "started_at", "finished_at", "updated_at", "lease_expires_at"}
)


def _execute(database: Database, sql: str, args: list[Any]) -> Any:
    """Run one statement (``%s`` marks, ``{jobs}``/``{job_logs}`` for the tables) in
    autocommit; return the cursor's rowcount, or its first row for a query."""
    schema = database.pg_schema
    if schema is None:
        sql = sql.format(jobs="jobs", job_logs="job_logs").replace("%s", "?")
        path = database.database_url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(path, timeout=30, isolation_level=None)) as conn:
            cursor = conn.execute(sql, args)
            return cursor.fetchone() if cursor.description else cursor.rowcount

    import psycopg

    sql = sql.format(jobs=f'"{schema}".jobs', job_logs=f'"{schema}".job_logs')
    with psycopg.connect(database.database_url, autocommit=True) as conn:
        cursor = conn.execute(sql, args)
        return cursor.fetchone() if cursor.description else cursor.rowcount


def _in(database: Database, job_ids: Sequence[str]) -> tuple[str, list[Any]]:
    """``id IN (...)`` for this backend, with its arguments."""
    if database.pg_schema is None:
        return f"IN ({', '.join('%s' for _ in job_ids)})", list(job_ids)
    return "= ANY(%s)", [list(job_ids)]


def backdate(database: Database, job_ids: Sequence[str], at: int, *columns: str) -> int:
    """Set ``columns`` of the jobs ``job_ids`` to ``at`` (microseconds since the epoch);
    return how many jobs were changed."""
    unknown = set(columns) - TIME_COLUMNS
    assert columns and not unknown, f"not timestamp columns: {sorted(unknown)}"
    assignments = ", ".join(f"{column} = %s" for column in columns)
    where, args = _in(database, job_ids)
    changed: int = _execute(
        database, f"UPDATE {{jobs}} SET {assignments} WHERE id {where}", [at] * len(columns) + args
    )
    return changed


def log_rows(database: Database, job_ids: Sequence[str]) -> int:
    """How many log lines the database holds for these job ids (whether the jobs exist
    or not)."""
    where, args = _in(database, job_ids)
    (count,) = _execute(database, f"SELECT count(*) FROM {{job_logs}} WHERE job_id {where}", args)
    return int(count)
