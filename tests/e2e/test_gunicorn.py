"""Several API processes under gunicorn: ``jobdeck serve --workers N`` and the documented
``gunicorn -c deploy/gunicorn.conf.py 'jobdeck.api:create_app()'`` with a ``jobdeck worker``."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import sys
import time
from collections import Counter
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from .processes import STOP_MARGIN_SECONDS, Launcher, free_port, wait_until

pytestmark = pytest.mark.e2e

GUNICORN = Path(sys.executable).with_name("gunicorn")
REPO = Path(__file__).resolve().parents[2]
GRACE_SECONDS = 2.0
N_JOBS = 40
#: The compat ids started with ``start_job``; the last one is stopped while it runs.
COMPAT_IDS = range(6)
N_GET_JOB = 50
STATUS_WORDS = {
    "queued": "QUEUED",
    "running": "RUNNING",
    "succeeded": "FINISHED",
    "failed": "FAILED",
    "cancelled": "CANCELLED",
}


def rows_in_file(db_path: Path) -> dict[str, sqlite3.Row]:
    """Every job row of the SQLite file, by id (read directly, read-only)."""
    with closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as conn:
        conn.row_factory = sqlite3.Row
        return {row["id"]: row for row in conn.execute("SELECT * FROM jobs")}


def compat_answer_from_row(row: sqlite3.Row) -> dict[str, Any]:
    """What ``GET /get_job/{id}`` must answer for a job of kind ``steps``, from its row."""
    return {
        "job_id": int(row["id"]),
        "n_steps": json.loads(row["params"])["n_steps"],
        "job_status": STATUS_WORDS[row["status"]],
        "is_cancelled": bool(row["cancel_requested"]) or row["status"] == "cancelled",
        "step": int(row["progress_current"]),
    }


def fresh_connections(base_url: str) -> httpx.Client:
    """A client that opens a new connection for every request, so that the requests are
    spread over the API processes (each accepts from the shared socket)."""
    return httpx.Client(base_url=base_url, timeout=30.0, headers={"Connection": "close"})


def pid_gone(pid: int) -> bool:
    """True once no process has this id."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(45)
def test_serve_with_workers_runs_each_job_once_and_stops_cleanly(jobdeck: Launcher) -> None:
    """``jobdeck serve --workers 2`` runs gunicorn with two API processes and one worker
    process: jobs submitted over HTTP run exactly once, all in the worker process (the API
    processes run none); 50 ``get_job`` answers agree with the database whichever process
    gives them; SIGTERM lets running jobs finish, stops every process within the grace
    period with exit status 0 and leaves nothing ``running``."""
    env = {"JOBDECK_SHUTDOWN_GRACE_SECONDS": str(GRACE_SECONDS), "JOBDECK_CONCURRENCY": "4"}
    server = jobdeck.serve("--workers", "2", env=env)
    assert server.base_url is not None
    worker_pid = int(server.wait_for_stderr(r"jobdeck worker started \(pid (\d+)\)").group(1))
    gunicorn_pid = int(server.wait_for_stderr(r"gunicorn started \(pid (\d+)\)").group(1))

    def booted() -> set[int] | None:
        pids = {int(p) for p in re.findall(r"Booting worker with pid: (\d+)", server.stderr())}
        return pids if len(pids) == 2 else None

    api_pids = wait_until(booted, timeout=10.0, what="two API processes booted")
    assert worker_pid not in api_pids and server.pid not in api_pids | {worker_pid}

    ids = [f"job-{i:02d}" for i in range(N_JOBS)]
    with fresh_connections(server.base_url) as http:
        for job_id in ids:
            spec = {"id": job_id, "kind": "steps", "params": {"n_steps": 2, "step_seconds": 0.01}}
            answer = http.post("/v1/jobs", json=spec)
            assert answer.status_code == 202, answer.text
        for n in COMPAT_IDS[:-1]:
            answer = http.post(f"/start_job/{n}", params={"n_steps": 3, "step_seconds": 0.02})
            assert answer.status_code == 200, answer.text
        stopped = COMPAT_IDS[-1]
        answer = http.post(f"/start_job/{stopped}", params={"n_steps": 500, "step_seconds": 0.02})
        assert answer.status_code == 200, answer.text

        def stopped_is_running() -> bool:
            answer = http.get(f"/get_job/{stopped}")
            return bool(answer.json()["job_status"] == "RUNNING" and answer.json()["step"] > 0)

        wait_until(stopped_is_running, timeout=10.0, what=f"job {stopped} running")
        assert http.post(f"/stop_job/{stopped}").status_code == 200

        def all_ended() -> bool:
            counts = http.get("/v1/stats").json()["queues"]["default"]
            assert counts["failed"] == 0, counts
            return bool(counts["succeeded"] == N_JOBS + len(COMPAT_IDS) - 1)

        wait_until(all_ended, timeout=20.0, what="every job ended", interval=0.1)
        assert http.get(f"/v1/jobs/{stopped}/wait", params={"timeout": 10}).json()["status"] == (
            "cancelled"
        )

        rows = rows_in_file(jobdeck.db_path)
        answers = [
            http.get(f"/get_job/{COMPAT_IDS[i % len(COMPAT_IDS)]}") for i in range(N_GET_JOB)
        ]

    # Each job ran once, in the worker process.
    log = server.stderr()
    for job_id in [*ids, *map(str, COMPAT_IDS)]:
        row = rows[job_id]
        assert row["attempt"] == 1 and json.loads(row["attempt_errors"]) == [], dict(row)
        assert int(row["worker"].rsplit(":", 2)[1]) == worker_pid, dict(row)
        runs = re.findall(rf"job {re.escape(job_id)} kind=steps running", log)
        assert len(runs) == 1, (job_id, runs)
    assert Counter(row["status"] for row in rows.values()) == Counter(
        {"succeeded": N_JOBS + len(COMPAT_IDS) - 1, "cancelled": 1}
    )

    # The same answer from every process, and the database's.
    for i, answer in enumerate(answers):
        assert answer.status_code == 200, answer.text
        expected = compat_answer_from_row(rows[str(COMPAT_IDS[i % len(COMPAT_IDS)])])
        assert answer.json() == expected

    # SIGTERM while jobs run: they finish, everything stops within the grace period.
    with fresh_connections(server.base_url) as http:
        drain = [
            {"id": f"drain-{i}", "kind": "steps", "params": {"n_steps": 5, "step_seconds": 0.1}}
            for i in range(4)
        ]
        assert http.post("/v1/jobs:batch", json={"jobs": drain}).status_code == 202

        def all_running() -> bool:
            return bool(http.get("/v1/stats").json()["queues"]["default"]["running"] == 4)

        wait_until(all_running, timeout=5.0, what="4 jobs running")

    stop_asked = time.monotonic()
    server.send(signal.SIGTERM)
    assert server.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS) == 0
    assert time.monotonic() - stop_asked < GRACE_SECONDS
    for pid in [gunicorn_pid, worker_pid, *api_pids]:
        wait_until(lambda pid=pid: pid_gone(pid), timeout=2.0, what=f"pid {pid} gone")

    statuses = Counter(row["status"] for row in rows_in_file(jobdeck.db_path).values())
    assert statuses == Counter({"succeeded": N_JOBS + len(COMPAT_IDS) + 3, "cancelled": 1})


@pytest.mark.timeout(30)
def test_gunicorn_with_the_deploy_config_and_a_worker_process(jobdeck: Launcher) -> None:
    """``gunicorn -c deploy/gunicorn.conf.py 'jobdeck.api:create_app()'`` run from the
    repository root serves the API with the embedded worker off, even when the environment
    asks for it (a job stays queued), and a ``jobdeck worker`` beside it runs the job.
    SIGTERM stops gunicorn with exit status 0."""
    port = free_port()
    env = {
        "JOBDECK_HOST": "127.0.0.1",
        "JOBDECK_PORT": str(port),
        "JOBDECK_WEB_WORKERS": "2",
        "JOBDECK_EMBEDDED_WORKER": "1",
    }
    assert jobdeck.run("migrate").returncode == 0
    api = jobdeck.spawn(
        GUNICORN,
        "gunicorn",
        ["-c", "deploy/gunicorn.conf.py", "jobdeck.api:create_app()"],
        env=env,
        base_url=f"http://127.0.0.1:{port}",
        cwd=REPO,
    )
    api.wait_ready()
    api.wait_for_stderr(r"Using worker: jobdeck\.gunicorn_conf\.UvicornWorker")
    with fresh_connections(f"http://127.0.0.1:{port}") as http:
        spec = {"id": "g-1", "kind": "steps", "params": {"n_steps": 2, "step_seconds": 0.01}}
        assert http.post("/v1/jobs", json=spec).status_code == 202
        answer = http.get("/v1/jobs/g-1/wait", params={"timeout": 0.5})
        assert answer.json()["status"] == "queued", answer.text
        assert http.get("/v1/stats").json()["workers"] == 0

        worker = jobdeck.worker()
        job = http.get("/v1/jobs/g-1/wait", params={"timeout": 10}).json()
        assert job["status"] == "succeeded", job
        assert job["result"] == {"steps": 2}, job
        assert int(job["worker"].rsplit(":", 2)[1]) == worker.pid, job
        assert re.search(r'uvicorn\.access \[\d+\]: .*"POST /v1/jobs HTTP/1\.1" 202', api.stderr())

    assert api.terminate() == 0
    assert worker.terminate() == 0


@pytest.mark.timeout(30)
def test_serve_stops_everything_when_a_child_dies(jobdeck: Launcher) -> None:
    """When the worker process of ``jobdeck serve --workers 2`` dies (``kill -9``), serve
    stops gunicorn and exits with a non-zero status, leaving no process behind."""
    server = jobdeck.serve("--workers", "2")
    worker_pid = int(server.wait_for_stderr(r"jobdeck worker started \(pid (\d+)\)").group(1))
    gunicorn_pid = int(server.wait_for_stderr(r"gunicorn started \(pid (\d+)\)").group(1))
    server.wait_for_stderr(r"worker \S+ started")

    os.kill(worker_pid, signal.SIGKILL)
    assert server.wait(GRACE_SECONDS + STOP_MARGIN_SECONDS) == 1
    assert re.search(r"worker \(pid \d+\) exited on its own with status -9", server.stderr())
    wait_until(lambda: pid_gone(gunicorn_pid), timeout=2.0, what="gunicorn gone")


@pytest.mark.timeout(30)
def test_serve_with_workers_and_no_worker_runs_the_api_alone(jobdeck: Launcher) -> None:
    """``jobdeck serve --workers 2 --no-worker`` runs gunicorn alone: a job stays queued and
    no worker is counted; SIGTERM stops it with exit status 0."""
    server = jobdeck.serve("--workers", "2", "--no-worker")
    assert server.base_url is not None
    with fresh_connections(server.base_url) as http:
        spec = {"id": "alone", "kind": "steps", "params": {"n_steps": 1, "step_seconds": 0.01}}
        assert http.post("/v1/jobs", json=spec).status_code == 202
        answer = http.get("/v1/jobs/alone/wait", params={"timeout": 0.5})
        assert answer.json()["status"] == "queued", answer.text
        assert http.get("/v1/stats").json()["workers"] == 0
    assert "jobdeck worker started" not in server.stderr()
    assert server.terminate() == 0


@pytest.mark.timeout(30)
def test_a_newer_schema_is_refused_before_anything_starts(jobdeck: Launcher) -> None:
    """Against a database migrated by a newer jobdeck, ``jobdeck migrate`` and ``jobdeck
    serve --workers 2`` refuse with one clear line and exit status 2, starting nothing."""
    assert jobdeck.run("migrate").returncode == 0
    with closing(sqlite3.connect(jobdeck.db_path)) as conn, conn:
        conn.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (999, 0)")

    for args in (["migrate"], ["serve", "--workers", "2", "--port", str(free_port())]):
        done = jobdeck.run(*args)
        assert done.returncode == 2, done.stderr
        assert re.search(r"^jobdeck: database schema version 999 is newer", done.stderr, re.M)
        assert "Traceback" not in done.stderr and "gunicorn" not in done.stderr
