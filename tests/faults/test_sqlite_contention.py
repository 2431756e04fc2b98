"""SQLite only: four processes writing one file at once.

One writer at a time is SQLite's rule; jobdeck's adapter opens every write with
``BEGIN IMMEDIATE`` and retries a lock wait that outlasts the busy timeout (DESIGN §3, the
adapter's docstring): no "database is locked" may ever reach a client or a task.

``jobdeck serve`` (API and embedded worker) and three ``jobdeck worker`` processes start
together on a new file (four migrations racing) and then share it under load: clients
submit jobs, read them, their logs, the list and the stats, and cancel some; the jobs write
progress and log lines on every step, so every worker flushes a few times a second, while
claims, heartbeats and lease rescues go on in all four processes.

What counts as reaching someone: an HTTP answer that is a 5xx or mentions "locked", a job
that failed or has an attempt error, or a line of any process's log that mentions
"locked". The adapter waits for the lock silently (its retries log nothing), so any
mention of it in a log means an error escaped the retry; none is acceptable.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from backends import Database
from e2e.database import DatabaseReader, Row
from e2e.processes import JobdeckProcess, Launcher, wait_until

from .load import Answer, Answers, ClientThreads, new_client, task_env

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.parametrize("fresh_database", ["sqlite"], indirect=True),
]

CLIENTS = 4
WORKERS = 3
#: Jobs submitted in all; the clients stop once they are in.
JOBS = 240
#: Steps of each job: a progress update and two log lines each.
N_STEPS = 15
STEP_SECONDS = 0.01
#: One job in this many is cancelled right after it is submitted.
CANCEL_EVERY = 8

SETTINGS = {
    "JOBDECK_CONCURRENCY": "6",
    # Leases longer than the other fault tests' second: four busy processes share two cores
    # here, and a heartbeat that waits its turn for the write lock past half a lease
    # abandons its run (allowed, at least once; but this test wants every job run once).
    "JOBDECK_LEASE_SECONDS": "3",
}


@dataclass
class Clients:
    """Clients that submit, read and cancel jobs until ``JOBS`` are in."""

    base_url: str
    answers: Answers = field(default_factory=Answers)
    cancelled: set[str] = field(default_factory=set)
    submitted: list[str] = field(default_factory=list)
    _numbers: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> list[Answer]:
        """Run the clients to the end and return every answer."""
        clients = ClientThreads(CLIENTS, self._client)
        clients.start()
        clients.join(stop=False, timeout=60.0)
        return self.answers.all()

    def _next(self) -> int | None:
        with self._lock:
            i = next(self._numbers)
        return i if i < JOBS else None

    def _client(self, n: int, _: threading.Event) -> None:
        ask = self.answers.request
        with new_client(self.base_url) as http:
            while (i := self._next()) is not None:
                job_id = f"busy-{i:04d}"
                spec = {
                    "id": job_id,
                    "kind": "chatty",
                    "params": {"n_steps": N_STEPS, "step_seconds": STEP_SECONDS},
                }
                if ask(http, "POST", "/v1/jobs", json=spec).status != 202:
                    continue
                with self._lock:
                    self.submitted.append(job_id)
                if i % CANCEL_EVERY == 0:
                    ask(http, "POST", f"/v1/jobs/{job_id}/cancel")
                    with self._lock:
                        self.cancelled.add(job_id)
                earlier = f"busy-{max(0, i - 10):04d}"
                ask(http, "GET", f"/v1/jobs/{earlier}")
                ask(http, "GET", f"/v1/jobs/{earlier}/logs")
                if i % 4 == n:
                    ask(http, "GET", "/v1/jobs", params={"limit": 50})
                    ask(http, "GET", "/v1/stats")


def log_lines(db_path: Path) -> dict[str, int]:
    """Stored log lines per job, read directly."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT job_id, count(*) FROM job_logs GROUP BY job_id").fetchall()
    return {job_id: int(n) for job_id, n in rows}


@pytest.mark.timeout(90)
def test_four_processes_on_one_file_never_show_a_locked_database(
    cluster: Launcher, db: DatabaseReader, fresh_database: Database
) -> None:
    """Four processes started together on a new file and writing it under load: no client
    sees a 5xx or "locked", no task fails, no log mentions "locked"; every job ends as asked
    (``succeeded``, or ``cancelled`` if it was) with all its progress and log lines."""
    cluster.settings.update(SETTINGS)
    # Started together: the four race to create and migrate the file.
    workers: list[JobdeckProcess] = [
        cluster.start("worker", env=task_env()) for _ in range(WORKERS)
    ]
    serve = cluster.serve(env=task_env())
    for worker in workers:
        worker.wait_for_stderr(r"worker \S+ started")
    processes = [serve, *workers]
    assert serve.base_url is not None

    clients = Clients(serve.base_url)
    answers = clients.run()

    bad = [
        a for a in answers if not a.answered or a.status >= 500 or "locked" in str(a.body).lower()
    ]
    assert not bad, "\n".join(a.describe() for a in bad[:20])
    assert len(clients.submitted) == JOBS

    def all_ended() -> dict[str, Row] | None:
        rows = db.jobs(clients.submitted)
        ended = all(row.status in {"succeeded", "failed", "cancelled"} for row in rows.values())
        return rows if len(rows) == JOBS and ended else None

    rows = wait_until(all_ended, timeout=60.0, what=f"{JOBS} jobs ended", interval=0.2)
    errors = [row for row in rows.values() if row.attempt_errors or row.status == "failed"]
    assert not errors, errors[:5]
    lines = log_lines(Path(fresh_database.database_url.removeprefix("sqlite:///")))
    for job_id, row in rows.items():
        if row.status == "succeeded":
            assert row.attempt == 1 and row.progress_current == N_STEPS, row
            assert lines.get(job_id) == 2 * N_STEPS, (row, lines.get(job_id))
        else:
            assert row.status == "cancelled" and job_id in clients.cancelled, row
    # The load really was spread: every process ran jobs.
    ran_in = {row.worker.split(":")[1] for row in rows.values() if row.worker}
    assert ran_in == {str(p.pid) for p in processes}, ran_in

    for process in processes:
        assert process.terminate() == 0, process.describe()
    for process in processes:
        stderr = process.stderr()
        assert "locked" not in stderr.lower(), process.describe()
        assert "Traceback" not in stderr, process.describe()
