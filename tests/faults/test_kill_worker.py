"""``kill -9`` of a ``jobdeck worker`` process in the middle of its jobs, on both backends."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from backends import Database
from e2e.processes import Launcher, wait_until

pytestmark = pytest.mark.e2e

#: Rescue comes one lease after the last heartbeat of the killed worker.
LEASE_SECONDS = 2.0
STEP_SECONDS = 0.1
#: Steps of the run that succeeds (the second).
N_STEPS = 5

#: The kinds of this test: steps like the built-in ``steps``, except that the first attempt
#: never ends by itself (it is the one killed), so that no timing decides whether the kill
#: lands in the middle of the job. One async kind, one cooperative sync kind.
KILL_TASKS = '''\
"""Task kinds of the kill-a-worker test."""

from jobdeck import JobContext, task


@task(name="first_never_ends")
async def first_never_ends(ctx: JobContext, n_steps: int, step_seconds: float) -> dict:
    step = 0
    while ctx.attempt == 1 or step < n_steps:
        await ctx.asleep(step_seconds)
        step += 1
        ctx.progress(step)
    return {"steps": step, "attempt": ctx.attempt}


@task(name="first_never_ends_sync")
def first_never_ends_sync(ctx: JobContext, n_steps: int, step_seconds: float) -> dict:
    step = 0
    while ctx.attempt == 1 or step < n_steps:
        ctx.sleep(step_seconds)
        step += 1
        ctx.progress(step)
    return {"steps": step, "attempt": ctx.attempt}
'''


def stored_lease(database: Database, job_id: str) -> tuple[str, int, str | None, datetime]:
    """Status, attempt, worker and lease expiry of a job, read straight from the database
    (times are integer microseconds since the epoch on both backends)."""
    if database.pg_schema is None:
        path = database.database_url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
            row = conn.execute(
                "SELECT status, attempt, worker, lease_expires_at FROM jobs WHERE id = ?",
                (job_id,),
            ).fetchone()
    else:
        import psycopg

        with psycopg.connect(database.database_url, autocommit=True) as conn:
            row = conn.execute(
                "SELECT status, attempt, worker, lease_expires_at"
                f' FROM "{database.pg_schema}".jobs WHERE id = %s',
                (job_id,),
            ).fetchone()
    assert row is not None, job_id
    status, attempt, worker, lease_expires_at = row
    return status, attempt, worker, datetime.fromtimestamp(lease_expires_at / 1e6, UTC)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time of the API (``2026-11-28T07:15:57.123456Z``)."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


def get(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``, checked to answer 200."""
    answer = http.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def pid_of(job: dict[str, Any]) -> int:
    """The process id in the job's worker name ``host:pid:n``."""
    return int(job["worker"].rsplit(":", 2)[1])


@pytest.mark.timeout(60)
def test_killed_worker_jobs_run_again_or_fail_worker_lost(
    cluster: Launcher, fresh_database: Database, tmp_path: Path
) -> None:
    """A ``jobdeck worker`` running two jobs is killed with SIGKILL while another worker
    process is up. Neither job is touched while the dead worker's lease lasts. Then the job
    with attempts left (async) runs again in the other process (attempt 2, started after the
    lease ended) and succeeds, the lost attempt recorded as ``WorkerLost``; the job with
    ``max_attempts=1`` (sync) ends ``failed`` with error type ``WorkerLost``, naming the dead
    worker, after the lease ended, without running again."""
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "kill_tasks.py").write_text(KILL_TASKS)
    cluster.settings.update(
        {"JOBDECK_TASKS": "kill_tasks", "JOBDECK_LEASE_SECONDS": str(LEASE_SECONDS)}
    )
    paths = [str(tmp_path / "tasks"), os.environ.get("PYTHONPATH")]
    env = {"PYTHONPATH": os.pathsep.join(filter(None, paths))}
    api = cluster.serve("--no-worker", env=env)
    doomed = cluster.worker(env=env)
    params = {"n_steps": N_STEPS, "step_seconds": STEP_SECONDS}
    specs = [
        {"id": "again", "kind": "first_never_ends", "params": params},
        {"id": "once", "kind": "first_never_ends_sync", "params": params, "max_attempts": 1},
    ]

    with httpx.Client(base_url=str(api.base_url), timeout=10.0) as http:
        answer = http.post("/v1/jobs:batch", json={"jobs": specs})
        assert answer.status_code == 202, answer.text

        def both_running() -> dict[str, dict[str, Any]] | None:
            jobs = {job_id: get(http, job_id) for job_id in ("again", "once")}
            ok = all(
                job["status"] == "running" and job["progress"]["current"] >= 1
                for job in jobs.values()
            )
            return jobs if ok else None

        before = wait_until(both_running, timeout=10.0, what="both jobs running")
        assert {pid_of(job) for job in before.values()} == {doomed.pid}
        assert {job["attempt"] for job in before.values()} == {1}
        rescuer = cluster.worker(env=env)

        assert doomed.kill() == -signal.SIGKILL
        leases = {}
        for job_id in ("again", "once"):
            status, attempt, worker, lease_end = stored_lease(fresh_database, job_id)
            assert (status, attempt, worker) == ("running", 1, before[job_id]["worker"])
            leases[job_id] = lease_end

        def run_again() -> dict[str, Any] | None:
            job = get(http, "again")
            return job if job["attempt"] == 2 else None

        second = wait_until(run_again, timeout=LEASE_SECONDS + 10, what="again runs again")
        # Never twice at once: the second run began only after the dead run's lease ended.
        assert parse_time(second["started_at"]) >= leases["again"]
        assert pid_of(second) == rescuer.pid

        def ended(job_id: str) -> dict[str, Any] | None:
            job = get(http, job_id)
            return job if job["status"] in {"succeeded", "failed", "cancelled"} else None

        again = wait_until(lambda: ended("again"), timeout=10.0, what="again ended")
        assert again["status"] == "succeeded", again
        assert again["result"] == {"steps": N_STEPS, "attempt": 2}
        assert again["error"] is None
        assert [(e["attempt"], e["type"]) for e in again["attempt_errors"]] == [(1, "WorkerLost")]

        once = wait_until(lambda: ended("once"), timeout=LEASE_SECONDS + 10, what="once ended")
        assert once["status"] == "failed", once
        assert once["attempt"] == 1 and once["max_attempts"] == 1, once
        assert once["error"]["type"] == "WorkerLost", once
        assert before["once"]["worker"] in once["error"]["message"], once
        assert [(e["attempt"], e["type"]) for e in once["attempt_errors"]] == [(1, "WorkerLost")]
        assert parse_time(once["finished_at"]) >= leases["once"]
        assert once["result"] is None

    assert rescuer.terminate() == 0
    assert re.search(r"job once kind=\S+ running", rescuer.stderr()) is None
