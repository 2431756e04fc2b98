"""``jobdeck serve`` and a separate ``jobdeck worker`` sharing one SQLite file."""

from __future__ import annotations

import signal
import sqlite3
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import STOP_MARGIN_SECONDS, Launcher, all_jobs, wait_until

pytestmark = pytest.mark.e2e

N_JOBS = 300
#: Jobs running when SIGTERM arrives: as many as both processes run at once (10 each).
N_DRAIN = 20
GRACE_SECONDS = 2.0


def statuses_in_file(db_path: Path) -> Counter[str]:
    """How many jobs of each status the SQLite file holds (read directly, read-only)."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    return Counter({status: n for status, n in rows})


@pytest.mark.timeout(45)
def test_two_processes_share_the_work_and_stop_cleanly(jobdeck: Launcher) -> None:
    """With the API's embedded worker and a separate worker process on one database, 300
    short jobs all succeed, each run exactly once (attempt 1, no attempt errors), and both
    processes run some of them (told apart by the pid in the ``worker`` field). SIGTERM while
    both processes run jobs lets those jobs finish, stops both with exit status 0 within
    the grace period, and leaves no job ``running`` in the file."""
    env = {"JOBDECK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS), "JOBDECK_CONCURRENCY": "10"}
    server = jobdeck.serve(env=env)
    worker = jobdeck.worker(env=env)
    assert server.base_url is not None

    specs = [
        {
            "id": f"job-{i:03d}",
            "kind": "steps",
            "params": {"n_steps": 1, "step_seconds": 0.01},
        }
        for i in range(N_JOBS)
    ]
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        answer = http.post("/v1/jobs:batch", json={"jobs": specs})
        assert answer.status_code == 202, answer.text
        items = answer.json()["items"]
        assert [job["id"] for job in items] == [spec["id"] for spec in specs]

        def all_succeeded() -> dict[str, Any] | None:
            answer = http.get("/v1/stats")
            assert answer.status_code == 200, answer.text
            stats = answer.json()
            counts = stats["queues"]["default"]
            assert counts["failed"] == 0 and counts["cancelled"] == 0, counts
            return stats if counts["succeeded"] == N_JOBS else None

        wait_until(all_succeeded, timeout=25.0, what=f"{N_JOBS} jobs succeeded", interval=0.1)
        jobs = all_jobs(http)

    assert sorted(job["id"] for job in jobs) == [spec["id"] for spec in specs]
    runs_by_pid: Counter[int] = Counter()
    for job in jobs:
        assert job["status"] == "succeeded", job
        assert job["attempt"] == 1, job
        assert job["attempt_errors"] == [], job
        assert job["result"] == {"steps": 1}, job
        _host, pid, _n = job["worker"].rsplit(":", 2)
        runs_by_pid[int(pid)] += 1
    assert set(runs_by_pid) == {server.pid, worker.pid}, runs_by_pid
    assert runs_by_pid[server.pid] > 0 and runs_by_pid[worker.pid] > 0, runs_by_pid

    # Jobs still running at SIGTERM are let finish within the grace period.
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        drain = [
            {"id": f"drain-{i:02d}", "kind": "steps", "params": {"n_steps": 5, "step_seconds": 0.1}}
            for i in range(N_DRAIN)
        ]
        answer = http.post("/v1/jobs:batch", json={"jobs": drain})
        assert answer.status_code == 202, answer.text

        def all_running() -> bool:
            answer = http.get("/v1/stats")
            assert answer.status_code == 200, answer.text
            return bool(answer.json()["queues"]["default"]["running"] == N_DRAIN)

        wait_until(all_running, timeout=5.0, what=f"{N_DRAIN} jobs running at once")

    stop_asked = time.monotonic()
    server.send(signal.SIGTERM)
    worker.send(signal.SIGTERM)
    exits = {
        "serve": server.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS),
        "worker": worker.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS),
    }
    assert time.monotonic() - stop_asked < GRACE_SECONDS

    assert statuses_in_file(jobdeck.db_path) == Counter({"succeeded": N_JOBS + N_DRAIN})
    assert exits == {"serve": 0, "worker": 0}


@pytest.mark.timeout(30)
def test_api_alone_runs_nothing_until_a_worker_process_comes(jobdeck: Launcher) -> None:
    """``jobdeck serve --no-worker`` stores jobs but runs none (a long-poll of a second
    still finds the job queued, and no worker is counted); a ``jobdeck worker`` started
    afterwards on the same file runs it."""
    server = jobdeck.serve("--no-worker")
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=30.0) as http:
        spec = {"id": "waiting", "kind": "steps", "params": {"n_steps": 1, "step_seconds": 0.01}}
        assert http.post("/v1/jobs", json=spec).status_code == 202

        answer = http.get("/v1/jobs/waiting/wait", params={"timeout": 1})
        assert answer.status_code == 200, answer.text
        assert answer.json()["status"] == "queued"
        stats = http.get("/v1/stats").json()
        assert stats["workers"] == 0
        assert stats["queues"]["default"]["queued"] == 1

        worker = jobdeck.worker()
        answer = http.get("/v1/jobs/waiting/wait", params={"timeout": 10})
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] == "succeeded", job
        assert job["worker"].rsplit(":", 2)[1] == str(worker.pid)
