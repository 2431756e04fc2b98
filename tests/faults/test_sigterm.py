"""SIGTERM of a ``jobdeck worker`` with jobs running: the graceful stop of DESIGN §3.

"SIGTERM: stop claiming, let running jobs finish within a grace period, then hand the rest
back to the queue. Nothing is left ``running`` with no owner. Exit status 0." and "A job
handed back at shutdown gets its attempt back."

A ``jobdeck serve --no-worker`` takes the jobs; one ``jobdeck worker`` with four slots runs
the four urgent ones, two shorter than the grace period and two longer (one async and one
sync task of each), while two more wait in the queue. SIGTERM then: the short ones end
``succeeded``, the long ones are back in the queue with their attempt given back and no
error recorded, the waiting ones were never claimed, the process exits 0 after the grace
period, and nothing is ``running``. A new worker then runs the rest to the end, each job in
one counted attempt.
"""

from __future__ import annotations

import re
import signal
import time

import httpx
import pytest

from e2e.database import DatabaseReader, Row
from e2e.processes import STOP_MARGIN_SECONDS, Launcher, wait_until

from .load import task_env

pytestmark = pytest.mark.e2e

GRACE_SECONDS = 2.0
SLOTS = 4

#: id -> (spec, status right after the SIGTERM).
JOBS: dict[str, tuple[dict[str, object], str]] = {
    "short-async": (
        {"kind": "steps", "params": {"n_steps": 5, "step_seconds": 0.2}, "priority": 5},
        "succeeded",
    ),
    "short-sync": ({"kind": "nap", "params": {"seconds": 1.0}, "priority": 5}, "succeeded"),
    "long-async": (
        {"kind": "steps", "params": {"n_steps": 10, "step_seconds": 0.3}, "priority": 5},
        "queued",
    ),
    "long-sync": ({"kind": "nap", "params": {"seconds": 3.0}, "priority": 5}, "queued"),
    "waiting-1": ({"kind": "steps", "params": {"n_steps": 1, "step_seconds": 0.1}}, "queued"),
    "waiting-2": ({"kind": "nap", "params": {"seconds": 0.1}}, "queued"),
}
RUNNING = [job_id for job_id, (spec, _) in JOBS.items() if spec.get("priority")]


def state_words(stderr: str, job_id: str) -> list[str]:
    """The state each log line of the worker announces for one job."""
    pattern = re.compile(rf"\bjob {re.escape(job_id)} kind=\w+ (\w+)")
    return [m.group(1) for m in pattern.finditer(stderr)]


@pytest.mark.timeout(60)
def test_sigterm_lets_short_jobs_finish_and_hands_long_ones_back(
    cluster: Launcher, db: DatabaseReader
) -> None:
    """Short jobs finish within the grace period, long ones go back to the queue with their
    attempt given back, unclaimed ones stay queued, exit status 0, nothing ``running``; a
    new worker finishes everything, one counted attempt per job."""
    cluster.settings.update(
        {
            "JOBDECK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
            "JOBDECK_CONCURRENCY": str(SLOTS),
            "JOBDECK_LEASE_SECONDS": "3",
        }
    )
    api = cluster.serve("--no-worker", env=task_env())
    assert api.base_url is not None
    with httpx.Client(base_url=api.base_url, timeout=10.0) as http:
        specs = [{"id": job_id, **spec} for job_id, (spec, _) in JOBS.items()]
        answer = http.post("/v1/jobs:batch", json={"jobs": specs})
        assert answer.status_code == 202, answer.text

    worker = cluster.worker(env=task_env())

    def urgent_ones_running() -> dict[str, Row] | None:
        rows = db.jobs(list(JOBS))
        running = sorted(job_id for job_id, row in rows.items() if row.status == "running")
        assert running == sorted(RUNNING) or len(running) < SLOTS, rows
        return rows if len(running) == SLOTS else None

    before = wait_until(urgent_ones_running, timeout=10.0, what="the urgent jobs running")
    assert all(before[job_id].attempt == 1 for job_id in RUNNING), before

    sent = time.monotonic()
    worker.send(signal.SIGTERM)
    status = worker.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS)
    took = time.monotonic() - sent
    stderr = worker.stderr()
    assert status == 0, worker.describe()
    # All four were still running when the stop began, and the long ones held it for the
    # whole grace period.
    assert f"waiting up to {GRACE_SECONDS:.1f}s for {SLOTS} running jobs" in stderr, stderr
    assert took >= GRACE_SECONDS * 0.9, took
    assert "Traceback" not in stderr

    rows = db.jobs(list(JOBS))
    assert db.status_counts().get("running", 0) == 0, rows
    for job_id, (_, expected) in JOBS.items():
        row = rows[job_id]
        assert row.status == expected, row
        assert row.attempt_errors == [], row
        if job_id.startswith("short"):
            assert row.attempt == 1, row
            assert state_words(stderr, job_id) == ["running", "succeeded"], job_id
        elif job_id.startswith("long"):
            assert row.attempt == 0, f"the attempt was not given back: {row}"
            assert state_words(stderr, job_id) == ["running", "handed_back"], job_id
        else:
            assert row.attempt == 0 and row.worker is None, f"claimed while stopping: {row}"
            assert state_words(stderr, job_id) == [], job_id

    # The rest is not lost: a new worker runs it, one counted attempt each.
    successor = cluster.worker(env=task_env())

    def all_succeeded() -> dict[str, Row] | None:
        rows = db.jobs(list(JOBS))
        return rows if all(row.status == "succeeded" for row in rows.values()) else None

    final = wait_until(all_succeeded, timeout=20.0, what="every job succeeded", interval=0.05)
    for job_id, row in final.items():
        assert row.attempt == 1 and row.attempt_errors == [], row
        if not job_id.startswith("short"):
            assert str(successor.pid) in str(row.worker), row
    assert successor.terminate() == 0
    assert api.terminate() == 0
