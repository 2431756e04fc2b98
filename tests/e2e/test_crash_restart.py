"""``kill -9`` of ``jobdeck serve`` in the middle of a job, then a restart on the same file."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import Launcher, wait_until

pytestmark = pytest.mark.e2e

#: The interrupted job: a few steps of 0.2 s, long enough to be killed in the middle.
N_STEPS = 8
STEP_SECONDS = 0.2
LEASE_SECONDS = 1.0


def submit(http: httpx.Client, spec: dict[str, Any]) -> dict[str, Any]:
    """``POST /v1/jobs``, checked to answer 202."""
    answer = http.post("/v1/jobs", json=spec)
    assert answer.status_code == 202, answer.text
    job: dict[str, Any] = answer.json()
    return job


def get(http: httpx.Client, job_id: str) -> dict[str, Any]:
    """``GET /v1/jobs/{id}``, checked to answer 200."""
    answer = http.get(f"/v1/jobs/{job_id}")
    assert answer.status_code == 200, answer.text
    job: dict[str, Any] = answer.json()
    return job


def wait_status(http: httpx.Client, job_id: str, status: str, timeout: float) -> dict[str, Any]:
    """Poll ``GET /v1/jobs/{id}`` until the job has ``status``."""

    def check() -> dict[str, Any] | None:
        job = get(http, job_id)
        return job if job["status"] == status else None

    return wait_until(check, timeout=timeout, what=f"job {job_id} {status}")


def stored_run(db_path: Path, job_id: str) -> tuple[str, str | None, datetime]:
    """Status, worker and lease expiry of a job as the SQLite file holds them (read directly;
    times are stored as integer microseconds since the epoch)."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        row = conn.execute(
            "SELECT status, worker, lease_expires_at FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
    assert row is not None, job_id
    return row[0], row[1], datetime.fromtimestamp(row[2] / 1e6, UTC)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time of the API (``2026-11-28T07:15:57.123456Z``)."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text)


@pytest.mark.timeout(45)
def test_killed_server_resumes_its_jobs_after_restart(jobdeck: Launcher) -> None:
    """Accepted jobs survive ``kill -9`` of the server: after a restart on the same file and
    port every job is still there; finished jobs are unchanged, queued ones still queued;
    the job that was running when the server died runs again once its lease has expired
    (attempt 2, started after the dead run's lease ended, the lost attempt recorded as
    ``WorkerLost``) and ends succeeded."""
    first = jobdeck.serve()
    assert first.base_url is not None
    port = int(first.base_url.rsplit(":", 1)[1])
    steps = {"n_steps": N_STEPS, "step_seconds": STEP_SECONDS}

    with httpx.Client(base_url=first.base_url, timeout=10.0) as http:
        submit(http, {"id": "done", "kind": "steps", "params": {"n_steps": 0}})
        submit(http, {"id": "stopped", "kind": "steps", "params": {"n_steps": 1}, "delay": 3600})
        assert http.post("/v1/jobs/stopped/cancel").status_code == 200
        submit(http, {"id": "later", "kind": "steps", "params": {"n_steps": 0}, "delay": 3600})
        submit(
            http,
            {"id": "elsewhere", "kind": "steps", "params": {"n_steps": 0}, "queue": "nobody"},
        )
        submit(http, {"id": "victim", "kind": "steps", "params": steps})

        wait_status(http, "done", "succeeded", timeout=5.0)

        def running_with_progress() -> dict[str, Any] | None:
            job = get(http, "victim")
            ok = job["status"] == "running" and job["progress"]["current"] >= 1
            return job if ok else None

        victim = wait_until(running_with_progress, timeout=5.0, what="victim running")
        assert victim["attempt"] == 1
        assert victim["max_attempts"] == 3
        assert victim["worker"].split(":")[1] == str(first.pid)
        before = {job_id: get(http, job_id) for job_id in ("done", "stopped", "later", "elsewhere")}

    assert first.kill() == -9
    status, owner, lease_expires = stored_run(jobdeck.db_path, "victim")
    assert (status, owner) == ("running", victim["worker"])

    second = jobdeck.serve(port=port)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10.0) as http:
        for job_id, job in before.items():
            assert get(http, job_id) == job, job_id
        assert before["done"]["status"] == "succeeded"
        assert before["stopped"]["status"] == "cancelled"
        assert before["later"]["status"] == "queued"
        assert before["elsewhere"]["status"] == "queued"

        def rerun() -> dict[str, Any] | None:
            job = get(http, "victim")
            return job if job["attempt"] == 2 and job["status"] == "running" else None

        running_again = wait_until(rerun, timeout=LEASE_SECONDS + 5, what="victim running again")
        # Never twice at once: the second run started only after the first one's lease ended.
        assert parse_time(running_again["started_at"]) >= lease_expires
        assert running_again["worker"].split(":")[1] == str(second.pid)

        final = wait_status(http, "victim", "succeeded", timeout=N_STEPS * STEP_SECONDS + 5)
        assert final["attempt"] == 2
        assert final["result"] == {"steps": N_STEPS}
        assert final["progress"]["current"] == N_STEPS
        assert [(e["attempt"], e["type"]) for e in final["attempt_errors"]] == [(1, "WorkerLost")]
        assert final["created_at"] == victim["created_at"]

        for job_id, job in before.items():
            assert get(http, job_id) == job, job_id
