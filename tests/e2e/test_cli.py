"""The ``jobdeck`` command line: ``migrate`` and a ``worker`` process alone."""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from jobdeck.model import JobSpec, Status
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.base import Store

from .processes import Launcher

pytestmark = pytest.mark.e2e

#: A task module for the worker: a kind that always fails, with two attempts.
BOOM_TASKS = '''\
"""Task kinds of the e2e tests."""

from jobdeck import task


@task(name="boom", max_attempts=2)
def boom() -> None:
    raise RuntimeError("boom on purpose")
'''


def schema_rows(db_path: Path) -> list[tuple[int]]:
    """The versions recorded in the file's migration table, read directly."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        return conn.execute("SELECT version FROM schema_migrations ORDER BY version").fetchall()


def table_names(db_path: Path) -> set[str]:
    """The tables of a SQLite file."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


@pytest.mark.timeout(30)
def test_migrate_creates_the_schema_and_is_idempotent(jobdeck: Launcher) -> None:
    """``jobdeck migrate`` on a new file creates the schema, prints its version and exits 0;
    run again it changes nothing and prints the same version."""
    assert not jobdeck.db_path.exists()

    first = jobdeck.run("migrate")
    assert first.returncode == 0, first.stderr
    match = re.fullmatch(r"schema version (\d+)\n", first.stdout)
    assert match is not None, first.stdout
    version = int(match.group(1))
    assert version >= 1
    assert jobdeck.db_path.exists()
    assert {"jobs", "job_logs", "workers"} <= table_names(jobdeck.db_path)
    rows = schema_rows(jobdeck.db_path)
    assert rows[-1] == (version,)

    second = jobdeck.run("migrate")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert schema_rows(jobdeck.db_path) == rows


@pytest.mark.timeout(30)
def test_migrate_takes_the_url_from_the_command_line_and_rejects_bad_ones(
    jobdeck: Launcher,
) -> None:
    """``--database-url sqlite:///relative.db`` is relative to the working directory (the
    SQLAlchemy rule); an unsupported URL exits 2 with a one-line message, no traceback."""
    done = jobdeck.run("--database-url", "sqlite:///relative.db", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("schema version ")
    assert (jobdeck.dir / "relative.db").exists()
    assert not jobdeck.db_path.exists()

    bad = jobdeck.run("migrate", env={"JOBDECK_DATABASE_URL": "mysql://localhost/jobs"})
    assert bad.returncode == 2
    assert bad.stderr.startswith("jobdeck: ")
    assert "Traceback" not in bad.stderr


@pytest.fixture
async def store(jobdeck: Launcher) -> AsyncIterator[Store]:
    """The test's own connection to the database the processes use (to submit and read)."""
    opened = open_store(Settings(database_url=jobdeck.database_url))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def state_words(stderr: str, job_id: str, kind: str) -> list[str]:
    """The state each log line about one job announces: the word after ``kind=<kind>``."""
    pattern = re.compile(rf"\bjob {re.escape(job_id)} kind={re.escape(kind)} (\w+)")
    return [m.group(1) for m in pattern.finditer(stderr)]


@pytest.mark.timeout(40)
async def test_worker_logs_every_state_change_and_exits_0_on_sigterm(
    jobdeck: Launcher,
    store: Store,
    tmp_path: Path,
    eventually: Callable[..., Awaitable[Any]],
) -> None:
    """``jobdeck worker`` alone runs the jobs of the database and loads ``JOBDECK_TASKS``; it
    logs one line on stderr per state change it makes, naming the job and its kind
    (succeeded, failed and retried, cancelled while running); SIGTERM with a job still
    running after the grace period hands that job back to the queue with its attempt
    returned, and the process exits 0."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "e2e_tasks.py").write_text(BOOM_TASKS)
    worker = jobdeck.worker(
        env={
            "JOBDECK_TASKS": "e2e_tasks",
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(tmp_path / "tasks"), os.environ.get("PYTHONPATH")])
            ),
            "JOBDECK_SHUTDOWN_GRACE_SECONDS": "0.5",
        }
    )

    await store.enqueue(
        [
            JobSpec("steps", {"n_steps": 2, "step_seconds": 0.01}, id="ok-1"),
            JobSpec("boom", {}, id="boom-1", max_attempts=2),
            JobSpec("steps", {"n_steps": 100_000, "step_seconds": 0.01}, id="cancel-1"),
        ]
    )

    async def reaches(job_id: str, status: Status, timeout: float = 10.0) -> None:
        async def check() -> bool:
            job = await store.get(job_id)
            return job is not None and job.status is status

        await eventually(check, timeout=timeout, what=f"job {job_id} {status.value}")

    await reaches("ok-1", Status.SUCCEEDED)
    await reaches("boom-1", Status.FAILED)
    await reaches("cancel-1", Status.RUNNING)
    await store.request_cancel("cancel-1")
    await reaches("cancel-1", Status.CANCELLED)

    await store.enqueue([JobSpec("steps", {"n_steps": 100_000, "step_seconds": 0.01}, id="long")])
    await reaches("long", Status.RUNNING)

    assert await asyncio.to_thread(worker.terminate) == 0

    stderr = worker.stderr()
    assert state_words(stderr, "ok-1", "steps") == ["running", "succeeded"]
    assert state_words(stderr, "boom-1", "boom") == ["running", "failed", "running", "failed"]
    assert state_words(stderr, "cancel-1", "steps") == ["running", "cancelled"]
    words = state_words(stderr, "long", "steps")
    assert len(words) == 2 and words[0] == "running", words
    assert words[1] in {"handed_back", "queued", "requeued"}, words
    assert "Traceback" not in stderr

    boom = await store.get("boom-1")
    assert boom is not None
    assert boom.attempt == 2
    assert [e.type for e in boom.attempt_errors] == ["RuntimeError", "RuntimeError"]
    long_job = await store.get("long")
    assert long_job is not None
    assert long_job.status is Status.QUEUED, long_job
    assert long_job.attempt == 0
