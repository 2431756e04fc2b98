"""Scale-out, end to end: ``jobdeck serve --workers 4`` and two ``jobdeck worker`` processes on
one database, SQLite and PostgreSQL.

Every request goes over a fresh connection, so that gunicorn spreads them over its four API
processes; the database is read directly (``sqlite3``, ``psycopg``) around every request.
The test checks that every answer agrees with the others and with the database, that short
jobs run exactly once each in more than one worker process, that a cancel sent to any API
process stops a job running in any worker process, and that SIGTERM stops everything with
exit status 0 and nothing left ``running``.
"""

from __future__ import annotations

import random
import re
import signal
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from backends import Database

from .database import DatabaseReader, Row, worker_pid
from .processes import STOP_MARGIN_SECONDS, JobdeckProcess, Launcher, wait_until

pytestmark = pytest.mark.e2e

API_PROCESSES = 4
#: Job slots per worker process (three of them: the one ``serve --workers`` starts, two more).
CONCURRENCY = 20
#: Leases longer than the other e2e tests' second: seven busy processes share a small machine
#: here. With 1 s, on SQLite, the burst of 2,000 jobs holds the write lock long enough for
#: heartbeats (bounded at a third of the lease) to time out, and a few dozen jobs that had
#: finished but whose outcome was not written yet are rescued (``WorkerLost``) and run again:
#: allowed (at least once), but this test checks "exactly once".
LEASE_SECONDS = 3.0
GRACE_SECONDS = 2.0

N_REQUESTS = 200
N_SHORT_JOBS = 2000
#: The step of half the short jobs (the others have none): 15 ms per run on average, over the
#: 10 ms under which a worker claims ahead. A worker then holds no more jobs than its slots
#: and the others take their share; claiming ahead, the first worker to see a batch could
#: take all of it before the others' next poll.
SHORT_STEP_SECONDS = 0.03
BATCH_SIZE = 500
#: Long jobs started for the cancel check; they stop once they ran in two worker processes.
#: One more than a worker's slots: a worker that took them all has none left for the last.
MAX_CANCEL_JOBS = CONCURRENCY + 1

#: The original recipe's jobs: id -> (n_steps, step_seconds).
RECIPE_JOBS: dict[int, tuple[int, float]] = {
    0: (1000, 0.01),  # stopped early
    1: (5, 0.05),  # finishes within the first requests
    2: (30, 0.05),  # finishes during the requests
    3: (200, 0.02),  # stopped later
    4: (2000, 0.05),  # runs through the requests, stopped at the end
    5: (0, 0.0),  # done at once
}
#: Request number -> job stopped then (more stops are drawn at random among these ids).
SCHEDULED_STOPS = {20: 0, 100: 3, 140: 1, 160: 5}
UNKNOWN_ID = 99

STATUS_WORDS = {
    "queued": "QUEUED",
    "running": "RUNNING",
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}
RANK = {"QUEUED": 0, "RUNNING": 1, "FINISHED": 2, "FAILED": 2, "CANCELLED": 2}
COMPAT_KEYS = {"job_id", "n_steps", "job_status", "is_cancelled", "step"}
MSG_STOPPED = "ジョブID : {} のジョブを中断しました"
MSG_ALREADY_FINISHED = "ジョブID : {} のジョブは既に終了しています"
MSG_NOT_RUNNING = "ジョブID : {} のジョブは実行されていません"
ACCESS_LINE = re.compile(r"uvicorn\.access \[(\d+)\]: .* \"(?:GET|POST) (/\S*) HTTP")


def compat_view(row: Row) -> dict[str, Any]:
    """What ``GET /get_job/N`` must answer for this row (DESIGN §4, the original routes)."""
    return {
        "job_id": int(row.id),
        "n_steps": row.params["n_steps"],
        "job_status": STATUS_WORDS[row.status],
        "is_cancelled": row.cancel_requested or row.status == "cancelled",
        "step": int(row.progress_current),
    }


# --- the timeline of every job -------------------------------------------------------------


class Timelines:
    """Every observation of each original-recipe job, in the order they were made: database
    reads before and after each request, and the answers in between. Each must be at or
    beyond the one before it; a terminal state never changes; a job asked to stop never
    reads ``FINISHED``."""

    def __init__(self) -> None:
        self.seen: dict[int, list[tuple[str, dict[str, Any]]]] = {}

    def observe(self, job_id: int, source: str, view: dict[str, Any]) -> None:
        """Add an observation and check it against the previous one of the same job."""
        assert set(view) == COMPAT_KEYS, (source, view)
        assert view["job_id"] == job_id, (source, view)
        assert view["n_steps"] == RECIPE_JOBS[job_id][0], (source, view)
        assert not (view["job_status"] == "FINISHED" and view["is_cancelled"]), (source, view)
        if view["job_status"] == "FINISHED":
            assert view["step"] == view["n_steps"], (source, view)
        history = self.seen.setdefault(job_id, [])
        if history:
            before_source, before = history[-1]
            context = f"job {job_id}: {before_source} saw {before}, then {source} saw {view}"
            if RANK[before["job_status"]] == 2:
                assert view == before, f"a terminal state changed: {context}"
            assert RANK[view["job_status"]] >= RANK[before["job_status"]], context
            assert view["is_cancelled"] >= before["is_cancelled"], context
            assert view["step"] >= before["step"], context
        history.append((source, view))

    def observe_rows(self, rows: Mapping[str, Row], when: str) -> None:
        """Observations of every recipe job from one read of the database."""
        for job_id in RECIPE_JOBS:
            row = rows.get(str(job_id))
            assert row is not None, f"job {job_id} missing from the database {when}"
            self.observe(job_id, f"database {when}", compat_view(row))


# --- processes -----------------------------------------------------------------------------


@dataclass
class Cluster:
    """``jobdeck serve --workers 4`` and two ``jobdeck worker`` processes on one database."""

    serve: JobdeckProcess
    workers: list[JobdeckProcess]
    db: DatabaseReader

    @property
    def base_url(self) -> str:
        """Where gunicorn listens."""
        assert self.serve.base_url is not None
        return self.serve.base_url

    def worker_pids(self) -> set[int]:
        """Process ids that may run jobs: the two workers and ``serve``'s processes, less
        the API processes that answered requests (API processes never run jobs)."""
        serving = set(self.serve.session_pids()) - self.api_pids("/")
        return serving | {w.pid for w in self.workers}

    def api_pids(self, path_prefix: str) -> set[int]:
        """Process ids of the API processes that answered requests to ``path_prefix...``."""
        return {
            int(pid)
            for pid, path in ACCESS_LINE.findall(self.serve.stderr())
            if path.startswith(path_prefix)
        }


@pytest.fixture
def cluster(fresh_database: Database, jobdeck: Launcher) -> Iterator[Cluster]:
    """The processes, started on a fresh database of each backend and ready; stopped by
    ``jobdeck`` (before ``fresh_database`` drops a PostgreSQL schema)."""
    jobdeck.settings["JOBDECK_DATABASE_URL"] = fresh_database.database_url
    if fresh_database.pg_schema is not None:
        jobdeck.settings["JOBDECK_PG_SCHEMA"] = fresh_database.pg_schema
    jobdeck.settings.update(
        {
            "JOBDECK_CONCURRENCY": str(CONCURRENCY),
            "JOBDECK_LEASE_SECONDS": str(LEASE_SECONDS),
            "JOBDECK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS),
        }
    )
    serve = jobdeck.serve("--workers", str(API_PROCESSES))
    serve.wait_for_stderr(r"worker \S+ started")
    wait_until(
        lambda: serve.stderr().count("Application startup complete") >= API_PROCESSES,
        timeout=20.0,
        what=f"{API_PROCESSES} API processes started",
    )
    workers = [jobdeck.worker(), jobdeck.worker()]
    db = DatabaseReader(fresh_database)
    try:
        yield Cluster(serve, workers, db)
    finally:
        db.close()


def fresh_client(base_url: str) -> httpx.Client:
    """A client that opens a new connection for every request (and says so), so that
    requests spread over gunicorn's API processes."""
    return httpx.Client(
        base_url=base_url,
        timeout=30.0,
        limits=httpx.Limits(max_keepalive_connections=0),
        headers={"Connection": "close"},
    )


# --- the test ------------------------------------------------------------------------------


@pytest.mark.timeout(100)
def test_scale_out_answers_agree_jobs_run_once_cancels_reach_every_worker(
    cluster: Cluster,
) -> None:
    """Four API processes and three worker processes on one database behave as one
    ``jobdeck serve``: (a) 200 consecutive requests of the original recipe agree with each
    other and with the database; (c) a cancel sent over HTTP stops running jobs in more than
    one worker process; (b) 2,000 short jobs all succeed, each run exactly once, in more
    than one worker process; SIGTERM stops every process with exit status 0, none left
    over, and no job ``running``."""
    with fresh_client(cluster.base_url) as http:
        finished = check_the_recipe_agrees(http, cluster)
        check_cancel_reaches_every_worker(http, cluster)
        check_short_jobs_run_once(http, cluster)
    stop_everything(cluster, succeeded=N_SHORT_JOBS + finished)


def check_the_recipe_agrees(http: httpx.Client, cluster: Cluster) -> int:
    """(a) The original recipe over four API processes, checked around every request;
    return how many of its jobs finished (were not cancelled)."""
    db = cluster.db
    ids = [str(job_id) for job_id in RECIPE_JOBS]
    timelines = Timelines()
    for job_id, (n_steps, step_seconds) in RECIPE_JOBS.items():
        answer = http.post(
            f"/start_job/{job_id}", params={"n_steps": n_steps, "step_seconds": step_seconds}
        )
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["message"] == f"ジョブID : {job_id} のジョブを開始しました", body
        assert body["job"]["job_status"] in {"QUEUED", "RUNNING", "FINISHED"}, body
    timelines.observe_rows(db.jobs(ids), "after the starts")

    rng = random.Random(20261128)
    stopped: set[int] = set()  # stop_job sent
    cancelled: set[int] = set()  # stop_job answered "stopped" (not "already finished")
    for i in range(N_REQUESTS):
        if i in SCHEDULED_STOPS:
            operation, job_id = "stop", SCHEDULED_STOPS[i]
        else:
            draw = rng.random()
            job_id = rng.choice([*RECIPE_JOBS, UNKNOWN_ID])
            if draw < 0.08 and stopped:
                operation, job_id = "stop", rng.choice(sorted(stopped))
            elif draw < 0.3:
                operation = "metadata"
            else:
                operation = "get"
        when = f"request {i} ({operation} {job_id})"
        timelines.observe_rows(db.jobs(ids), f"before {when}")

        if operation == "metadata":
            answer = http.get("/metadata")
            assert answer.status_code == 200, answer.text
            listed = answer.json()
            assert set(listed) == set(ids), listed
            for key, view in listed.items():
                timelines.observe(int(key), f"{when}: answer", view)
        elif operation == "get" and job_id == UNKNOWN_ID:
            answer = http.get(f"/get_job/{job_id}")
            assert answer.status_code == 404, answer.text
            assert answer.json()["message"] == MSG_NOT_RUNNING.format(job_id), answer.text
        elif operation == "get":
            answer = http.get(f"/get_job/{job_id}")
            assert answer.status_code == 200, answer.text
            timelines.observe(job_id, f"{when}: answer", answer.json())
        else:
            answer = http.post(f"/stop_job/{job_id}")
            assert answer.status_code == 200, answer.text
            body = answer.json()
            view = body["job"]
            timelines.observe(job_id, f"{when}: answer", view)
            if body["message"] == MSG_ALREADY_FINISHED.format(job_id):
                assert RANK[view["job_status"]] == 2, body
            else:
                assert body["message"] == MSG_STOPPED.format(job_id), body
                assert view["is_cancelled"] and view["job_status"] != "FINISHED", body
                cancelled.add(job_id)
            stopped.add(job_id)

        timelines.observe_rows(db.jobs(ids), f"after {when}")

    # The job still running is stopped; every job ends as it must.
    answer = http.post("/stop_job/4")
    assert answer.status_code == 200, answer.text
    assert answer.json()["message"] == MSG_STOPPED.format(4), answer.text
    cancelled.add(4)
    assert 0 in cancelled, "job 0 ended before its stop"

    def all_ended() -> dict[str, Row] | None:
        rows = db.jobs(ids)
        return rows if all(RANK[STATUS_WORDS[r.status]] == 2 for r in rows.values()) else None

    rows = wait_until(all_ended, timeout=10.0, what="the recipe's jobs ended")
    timelines.observe_rows(rows, "at the end")
    for job_id, (n_steps, _) in RECIPE_JOBS.items():
        answer = http.get(f"/get_job/{job_id}")
        assert answer.status_code == 200, answer.text
        view = answer.json()
        timelines.observe(job_id, "final get_job", view)
        row = rows[str(job_id)]
        assert row.attempt == 1 and row.attempt_errors == [], row
        if job_id in cancelled:
            assert view["job_status"] == "CANCELLED" and view["is_cancelled"], view
        else:  # finished before any stop reached it
            assert view == compat_view(row), (view, row)
            assert view["job_status"] == "FINISHED" and view["step"] == n_steps, view
            assert row.result == {"steps": n_steps}, row

    # The requests really were spread: more than one API process answered them.
    answered_by = cluster.api_pids("/get_job/") | cluster.api_pids("/metadata")
    assert len(answered_by) >= 2, f"every request went to one API process: {answered_by}"
    return len(RECIPE_JOBS) - len(cancelled)


def check_cancel_reaches_every_worker(http: httpx.Client, cluster: Cluster) -> None:
    """(c) Long jobs are started one at a time until they run in two worker processes at
    least; each is cancelled over a fresh connection and ends ``cancelled``."""
    db = cluster.db
    running_in: dict[str, int] = {}
    for n in range(MAX_CANCEL_JOBS):
        job_id = f"cancel-{n:02d}"
        spec = {"id": job_id, "kind": "steps", "params": {"n_steps": 1000, "step_seconds": 0.05}}
        answer = http.post("/v1/jobs", json=spec)
        assert answer.status_code == 202, answer.text

        def running(job_id: str = job_id) -> Row | None:
            row = db.jobs([job_id]).get(job_id)
            return row if row is not None and row.status == "running" else None

        row = wait_until(running, timeout=5.0, what=f"{job_id} running")
        running_in[job_id] = worker_pid(row.worker)
        if len(set(running_in.values())) >= 2:
            break
    assert set(running_in.values()) <= cluster.worker_pids(), running_in
    assert len(set(running_in.values())) >= 2, f"all long jobs ran in one process: {running_in}"

    for job_id in running_in:
        answer = http.post(f"/v1/jobs/{job_id}/cancel")
        assert answer.status_code == 202, answer.text
        assert answer.json()["cancel_requested"] is True, answer.text
    for job_id in running_in:
        answer = http.get(f"/v1/jobs/{job_id}/wait", params={"timeout": 10})
        assert answer.status_code == 200, answer.text
        job = answer.json()
        assert job["status"] == "cancelled", job
        assert job["result"] is None and job["attempt"] == 1, job
    rows = db.jobs(list(running_in))
    assert {row.status for row in rows.values()} == {"cancelled"}, rows


def check_short_jobs_run_once(http: httpx.Client, cluster: Cluster) -> None:
    """(b) 2,000 short jobs, sent in batches: all succeed, each run exactly once, in more
    than one worker process."""
    db = cluster.db
    specs = [
        {
            "id": f"short-{i:04d}",
            "kind": "steps",
            "params": {"n_steps": i % 2, "step_seconds": SHORT_STEP_SECONDS},
        }
        for i in range(N_SHORT_JOBS)
    ]
    for start in range(0, N_SHORT_JOBS, BATCH_SIZE):
        chunk = specs[start : start + BATCH_SIZE]
        answer = http.post("/v1/jobs:batch", json={"jobs": chunk})
        assert answer.status_code == 202, answer.text
        assert [job["id"] for job in answer.json()["items"]] == [s["id"] for s in chunk]

    def all_ended() -> list[Row] | None:
        rows = db.with_prefix("short-")
        assert len(rows) == N_SHORT_JOBS, len(rows)
        failed = [r for r in rows if r.status in {"failed", "cancelled"}]
        assert not failed, failed[:5]
        return rows if all(r.status == "succeeded" for r in rows) else None

    rows = wait_until(all_ended, timeout=40.0, what=f"{N_SHORT_JOBS} jobs succeeded", interval=0.2)
    runs_by_pid: dict[int, int] = {}
    for row in rows:
        n_steps = row.params["n_steps"]
        assert row.attempt == 1 and row.attempt_errors == [], row
        assert row.result == {"steps": n_steps}, row
        pid = worker_pid(row.worker)
        runs_by_pid[pid] = runs_by_pid.get(pid, 0) + 1
    assert set(runs_by_pid) <= cluster.worker_pids(), runs_by_pid
    assert len(runs_by_pid) >= 2, f"one process ran every job: {runs_by_pid}"

    # The API agrees with the database.
    answer = http.get("/v1/stats")
    assert answer.status_code == 200, answer.text
    assert answer.json()["queues"]["default"]["succeeded"] == db.status_counts()["succeeded"]


def stop_everything(cluster: Cluster, *, succeeded: int) -> None:
    """SIGTERM to every process at once: all exit 0 within the grace period (plus a margin),
    ``serve`` leaves no process of its own behind, and no job is left ``running``."""
    processes = [cluster.serve, *cluster.workers]
    for process in processes:
        process.send(signal.SIGTERM)
    exits = {p.name: p.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS + 10) for p in processes}
    assert exits == {p.name: 0 for p in processes}, exits
    assert cluster.serve.session_pids() == [], "serve --workers left processes running"
    counts = cluster.db.status_counts()
    assert counts.get("running", 0) == 0 and counts.get("queued", 0) == 0, counts
    assert counts["succeeded"] == succeeded, counts
