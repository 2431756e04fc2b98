"""``kill -9`` of an API process in the middle of a burst of submits.

"Accepted means stored" (DESIGN §3): a 202 is sent only after the job is committed, so no
job that was answered 202 may be missing afterwards, however the process died. Requests
that got no answer may or may not have stored their job; both are fine.

Several clients submit at once, single jobs with their own ids or with ids the server makes,
and batches; every answer is recorded. Then:

- ``jobdeck serve`` (API and embedded worker in one process) is killed with SIGKILL and
  started again on the same port while the clients go on;
- ``jobdeck serve --workers 2``: one of the two gunicorn API processes is killed with
  SIGKILL; gunicorn starts another, and the other one keeps answering meanwhile.

Afterwards every job named in a 202 (or 200) answer is in the database (read directly), no
answer was a 5xx, and every job runs to ``succeeded``: those the killed process was running
are rescued once their lease ran out.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import threading
import time
from collections.abc import Callable

import pytest

from e2e.database import DatabaseReader, Row
from e2e.processes import Launcher, wait_until

from .load import Answer, ClientLoad, new_client

pytestmark = pytest.mark.e2e

CLIENTS = 4
#: 202 answers before the kill, and after the API is back, at least.
ACCEPTED_BEFORE = 80
ACCEPTED_AFTER = 40
#: Pause of a client after a request that got no answer (the API is down or restarting).
RETRY_PAUSE_SECONDS = 0.02
ACCESS_LINE = re.compile(r"uvicorn\.access \[(\d+)\]: .* \"POST /v1/jobs\S* HTTP")


class Burst(ClientLoad):
    """Clients submitting jobs as fast as the API takes them, until stopped; with
    ``keep_alive`` false, each request on a new connection."""

    def __init__(self, base_url: str, *, keep_alive: bool = True) -> None:
        super().__init__(base_url, CLIENTS)
        self.keep_alive = keep_alive

    def accepted(self) -> int:
        """202 answers so far."""
        return sum(1 for a in self.answers.all() if a.status == 202)

    def client(self, n: int, stop: threading.Event) -> None:
        with new_client(self.base_url, timeout=10.0, keep_alive=self.keep_alive) as http:
            for i in itertools.count():
                if stop.is_set():
                    return
                # One in four jobs takes a moment, so that the killed process holds some.
                steps = {"n_steps": 3, "step_seconds": 0.05} if i % 4 == 0 else {"n_steps": 0}
                if i % 5 == 4:
                    specs = [
                        {"id": f"c{n}-{i:05d}-b{k}", "kind": "steps", "params": steps}
                        for k in range(3)
                    ]
                    answer = self.answers.request(
                        http, "POST", "/v1/jobs:batch", json={"jobs": specs}
                    )
                elif i % 2:
                    spec = {"id": f"c{n}-{i:05d}", "kind": "steps", "params": steps}
                    answer = self.answers.request(http, "POST", "/v1/jobs", json=spec)
                else:  # the server makes the id
                    spec = {"kind": "steps", "params": steps, "labels": {"client": str(n)}}
                    answer = self.answers.request(http, "POST", "/v1/jobs", json=spec)
                if not answer.answered:
                    time.sleep(RETRY_PAUSE_SECONDS)


def named_jobs(answer: Answer) -> list[str]:
    """The ids of the jobs a 200 or 202 answer reports (one, or a batch's items)."""
    body = answer.body
    assert isinstance(body, dict), answer.describe()
    if "items" in body:
        return [job["id"] for job in body["items"]]
    return [body["id"]]


def check_accepted_jobs_exist(answers: list[Answer], db: DatabaseReader) -> list[str]:
    """Every job named in a 2xx answer is in the database; no answer was a 5xx or anything
    but 200/202. Return the ids of the accepted jobs."""
    bad = [a for a in answers if a.answered and a.status not in {200, 202}]
    assert not bad, "\n".join(a.describe() for a in bad[:20])
    accepted = [job_id for a in answers if a.answered for job_id in named_jobs(a)]
    assert len(set(accepted)) == len(accepted), "an id was answered twice"
    stored = db.jobs(accepted)
    missing = [job_id for job_id in accepted if job_id not in stored]
    assert not missing, f"{len(missing)} of {len(accepted)} accepted jobs are lost: {missing[:20]}"
    return accepted


def wait_all_succeeded(db: DatabaseReader, ids: list[str]) -> dict[str, Row]:
    """Wait until every one of ``ids`` has succeeded (none failed or was cancelled)."""

    def done() -> dict[str, Row] | None:
        rows = db.jobs(ids)
        broken = [row for row in rows.values() if row.status in {"failed", "cancelled"}]
        assert not broken, broken[:5]
        return rows if all(row.status == "succeeded" for row in rows.values()) else None

    return wait_until(done, timeout=30.0, what=f"{len(ids)} jobs succeeded", interval=0.1)


def until(condition: Callable[[], bool], what: str) -> None:
    """Wait for the burst to get somewhere."""
    wait_until(condition, timeout=30.0, what=what, interval=0.01)


@pytest.mark.timeout(90)
def test_kill_9_of_serve_loses_no_accepted_job(cluster: Launcher, db: DatabaseReader) -> None:
    """SIGKILL of ``jobdeck serve`` mid-burst, then a restart on the same port: every job
    answered 202 exists and runs to ``succeeded``; some requests got no answer."""
    cluster.settings["JOBDECK_CONCURRENCY"] = "20"
    first = cluster.serve()
    assert first.base_url is not None
    port = int(first.base_url.rsplit(":", 1)[1])
    burst = Burst(first.base_url)
    burst.start()
    try:
        until(lambda: burst.accepted() >= ACCEPTED_BEFORE, "submits before the kill")
        assert first.kill() == -signal.SIGKILL
        killed_at = burst.answers.since_start()
        cluster.serve(port=port)
        resumed = burst.accepted()
        until(lambda: burst.accepted() >= resumed + ACCEPTED_AFTER, "submits after the restart")
    finally:
        answers = burst.finish()

    unanswered = [a for a in answers if not a.answered]
    assert unanswered, "no request went unanswered: the kill missed the burst"
    assert any(a.status == 202 and a.sent > killed_at for a in answers)
    accepted = check_accepted_jobs_exist(answers, db)
    rows = wait_all_succeeded(db, accepted)
    rescued = [row for row in rows.values() if row.attempt > 1]
    assert all([e["type"] for e in row.attempt_errors] == ["WorkerLost"] for row in rescued)


@pytest.mark.timeout(90)
def test_kill_9_of_a_gunicorn_api_process_loses_no_accepted_job(
    cluster: Launcher, db: DatabaseReader
) -> None:
    """SIGKILL of one of the two API processes of ``jobdeck serve --workers 2`` mid-burst:
    every job answered 202 exists and runs to ``succeeded``; gunicorn replaces the process,
    and both the survivor and the new process answer afterwards."""
    serve = cluster.serve("--workers", "2")
    assert serve.base_url is not None

    def api_pids() -> list[int]:
        """API processes that answered a submit, in the order they first did."""
        seen: dict[int, None] = {}
        for pid in ACCESS_LINE.findall(serve.stderr()):
            seen.setdefault(int(pid), None)
        return list(seen)

    burst = Burst(serve.base_url, keep_alive=False)
    burst.start()
    try:
        until(lambda: burst.accepted() >= ACCEPTED_BEFORE, "submits before the kill")
        until(lambda: len(api_pids()) == 2, "both API processes answering")
        victim = api_pids()[0]
        assert victim in serve.session_pids()
        survivor = api_pids()[1]
        os.kill(victim, signal.SIGKILL)
        resumed = burst.accepted()
        until(lambda: len(api_pids()) == 3, "a new API process answering")
        until(lambda: burst.accepted() >= resumed + ACCEPTED_AFTER, "submits after the kill")
    finally:
        answers = burst.finish()

    (replacement,) = set(api_pids()) - {victim, survivor}
    assert victim not in serve.session_pids()
    assert {survivor, replacement} <= set(serve.session_pids())
    accepted = check_accepted_jobs_exist(answers, db)
    wait_all_succeeded(db, accepted)
    assert serve.terminate() == 0
