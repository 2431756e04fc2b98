"""The original tutorial's ``curl`` recipe, sent by httpx to a real ``jobdeck serve``.

The recipe (seed/original-tutorial.md)::

    curl -X POST http://${HOST}:${PORT}/start_job/0?n_steps=100
    curl -X POST http://${HOST}:${PORT}/start_job/1?n_steps=10
    curl -X POST http://${HOST}:${PORT}/start_job/2?n_steps=20
    curl -X POST http://${HOST}:${PORT}/stop_job/0
    curl -X GET http://${HOST}:${PORT}/get_job/0   (and 1, 2)

Steps last ``STEP`` seconds here instead of the default one second, through the optional
``step_seconds`` query parameter, so that the recipe runs in a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from .processes import JobdeckProcess, Launcher, wait_until

pytestmark = pytest.mark.e2e

STEP = 0.1
PROBLEM = "application/problem+json"


def started(n: int) -> str:
    return f"ジョブID : {n} のジョブを開始しました"


def stopped(n: int) -> str:
    return f"ジョブID : {n} のジョブを中断しました"


def not_running(n: int) -> str:
    return f"ジョブID : {n} のジョブは実行されていません"


def already_running(n: int) -> str:
    return f"ジョブID : {n} のジョブは既に実行中です"


def already_finished(n: int) -> str:
    return f"ジョブID : {n} のジョブは既に終了しています"


@pytest.fixture
def server(jobdeck: Launcher) -> JobdeckProcess:
    """``jobdeck serve`` with its embedded worker."""
    return jobdeck.serve()


@pytest.fixture
def http(server: JobdeckProcess) -> Iterator[httpx.Client]:
    """An HTTP client of the server, like ``curl http://${HOST}:${PORT}``."""
    assert server.base_url is not None
    with httpx.Client(base_url=server.base_url, timeout=10.0) as client:
        yield client


def json_object(answer: httpx.Response, status: int = 200) -> dict[str, Any]:
    """The answer's body, checked to be a JSON object with the expected status."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert isinstance(body, dict), body
    return body


def get_job(http: httpx.Client, n: int) -> dict[str, Any]:
    """``GET /get_job/N``: the job in the original shape."""
    body = json_object(http.get(f"/get_job/{n}"))
    assert set(body) == {"job_id", "n_steps", "job_status", "is_cancelled", "step"}, body
    assert body["job_id"] == n
    return body


def start_job(http: httpx.Client, n: int, n_steps: int) -> dict[str, Any]:
    """``POST /start_job/N?n_steps=S&step_seconds=STEP``: checked to answer 200 and the
    original message; returns the job it shows."""
    answer = http.post(f"/start_job/{n}?n_steps={n_steps}&step_seconds={STEP}")
    body = json_object(answer)
    assert body["message"] == started(n)
    job = body["job"]
    assert job["job_id"] == n
    assert job["n_steps"] == n_steps
    assert job["job_status"] in {"QUEUED", "RUNNING"}
    assert job["is_cancelled"] is False
    return job


def wait_status(http: httpx.Client, n: int, status: str, timeout: float) -> dict[str, Any]:
    """Poll ``/get_job/N`` until its ``job_status`` is ``status``."""

    def check() -> dict[str, Any] | None:
        job = get_job(http, n)
        return job if job["job_status"] == status else None

    return wait_until(check, timeout=timeout, what=f"job {n} {status}")


@pytest.mark.timeout(40)
def test_original_recipe(http: httpx.Client) -> None:
    """The recipe works as its author meant it: three jobs run at once (all three RUNNING
    together) with ``step`` advancing; ``stop_job/0`` makes job 0 CANCELLED within a second
    and it stays CANCELLED (it never turns FINISHED, the original's bug); jobs 1 and 2 end
    FINISHED with every step done. Every answer is a JSON object carrying the original
    Japanese message."""
    assert http.get("/").json() == "Hello Flask-API Server!\n"
    assert http.get("/health").json() == {"health": "ok"}

    start_job(http, 0, 100)
    start_job(http, 1, 10)
    start_job(http, 2, 20)

    def all_running() -> list[dict[str, Any]] | None:
        jobs = [get_job(http, n) for n in (0, 1, 2)]
        return jobs if all(j["job_status"] == "RUNNING" for j in jobs) else None

    wait_until(all_running, timeout=3.0, what="jobs 0, 1 and 2 RUNNING at once")

    first = get_job(http, 0)

    def advanced() -> dict[str, Any] | None:
        job = get_job(http, 0)
        assert job["job_status"] == "RUNNING", job
        return job if job["step"] > first["step"] else None

    later = wait_until(advanced, timeout=3.0, what="job 0's step advancing")
    assert 0 < later["step"] < 100
    assert later["n_steps"] == 100
    assert later["is_cancelled"] is False

    stop_asked = time.monotonic()
    body = json_object(http.post("/stop_job/0"))
    assert body["message"] == stopped(0)
    assert body["job"]["job_id"] == 0
    assert body["job"]["is_cancelled"] is True
    cancelled = wait_status(http, 0, "CANCELLED", timeout=1.0)
    assert time.monotonic() - stop_asked < 1.0
    assert cancelled["is_cancelled"] is True
    assert cancelled["step"] < 100

    one = wait_status(http, 1, "FINISHED", timeout=10 * STEP + 5)
    assert (one["step"], one["n_steps"], one["is_cancelled"]) == (10, 10, False)
    two = wait_status(http, 2, "FINISHED", timeout=20 * STEP + 5)
    assert (two["step"], two["n_steps"], two["is_cancelled"]) == (20, 20, False)

    # Seconds later, job 0 is still cancelled, its step frozen.
    assert get_job(http, 0) == cancelled

    metadata = json_object(http.get("/metadata"))
    assert {key: metadata[key] for key in ("0", "1", "2")} == {
        "0": cancelled,
        "1": one,
        "2": two,
    }


@pytest.mark.timeout(30)
def test_recipe_errors_and_restarts(http: httpx.Client) -> None:
    """Unknown ids answer 404 problem+json with the original message; starting an id that
    is queued or running answers 409 and changes nothing; stopping a finished job answers
    200 "already finished" and leaves it FINISHED; starting a finished id runs it anew."""
    for answer in (http.get("/get_job/42"), http.post("/stop_job/42")):
        problem = json_object(answer, 404)
        assert answer.headers["content-type"].startswith(PROBLEM)
        assert problem["status"] == 404
        assert problem["message"] == not_running(42)

    start_job(http, 5, 1000)
    answer = http.post(f"/start_job/5?n_steps=3&step_seconds={STEP}")
    problem = json_object(answer, 409)
    assert answer.headers["content-type"].startswith(PROBLEM)
    assert problem["status"] == 409
    assert problem["message"] == already_running(5)
    assert get_job(http, 5)["n_steps"] == 1000
    assert json_object(http.post("/stop_job/5"))["message"] == stopped(5)
    wait_status(http, 5, "CANCELLED", timeout=1.0)

    start_job(http, 6, 2)
    finished = wait_status(http, 6, "FINISHED", timeout=5.0)
    body = json_object(http.post("/stop_job/6"))
    assert body["message"] == already_finished(6)
    assert body["job"] == finished
    assert get_job(http, 6) == finished

    again = start_job(http, 6, 3)
    assert again["step"] == 0
    rerun = wait_status(http, 6, "FINISHED", timeout=5.0)
    assert (rerun["step"], rerun["n_steps"]) == (3, 3)

    restarted = start_job(http, 5, 1)
    assert restarted["n_steps"] == 1
    assert wait_status(http, 5, "FINISHED", timeout=5.0)["is_cancelled"] is False

    invalid = http.post("/start_job/7")
    assert invalid.status_code == 422
    assert invalid.headers["content-type"].startswith(PROBLEM)
    assert http.get("/get_job/7").status_code == 404


@pytest.mark.timeout(30)
def test_v1_equivalents(http: httpx.Client) -> None:
    """The same recipe through the v1 API: ``POST /v1/jobs`` answers 202 with the stored job
    and its Location; ``GET /v1/jobs/{id}`` shows it running with progress and then
    succeeded with its result; ``POST /v1/jobs/{id}/cancel`` on a running job answers 202
    and the job ends cancelled; an original id N is v1 job "N" (the same job)."""
    params = {"n_steps": 1000, "step_seconds": STEP}
    answer = http.post("/v1/jobs", json={"kind": "steps", "params": params})
    long_job = json_object(answer, 202)
    job_id = long_job["id"]
    assert answer.headers["location"] == f"/v1/jobs/{job_id}"
    assert long_job["kind"] == "steps"
    assert long_job["params"] == params
    assert long_job["status"] in {"queued", "running"}
    assert long_job["max_attempts"] == 3

    answer = http.post(
        "/v1/jobs", json={"kind": "steps", "params": {"n_steps": 3, "step_seconds": STEP}}
    )
    short_id = json_object(answer, 202)["id"]

    def running_with_progress() -> dict[str, Any] | None:
        job = json_object(http.get(f"/v1/jobs/{job_id}"))
        ok = job["status"] == "running" and job["progress"]["current"] >= 1
        return job if ok else None

    running = wait_until(running_with_progress, timeout=3.0, what="v1 job running with progress")
    assert running["progress"]["total"] == 1000
    assert running["attempt"] == 1

    cancel = http.post(f"/v1/jobs/{job_id}/cancel")
    assert json_object(cancel, 202)["cancel_requested"] is True

    def ended(wanted_id: str, status: str) -> dict[str, Any] | None:
        job = json_object(http.get(f"/v1/jobs/{wanted_id}"))
        return job if job["status"] == status else None

    cancelled = wait_until(lambda: ended(job_id, "cancelled"), timeout=1.0, what="v1 cancelled")
    assert cancelled["result"] is None
    assert cancelled["finished_at"] is not None

    succeeded = wait_until(lambda: ended(short_id, "succeeded"), timeout=5.0, what="v1 done")
    assert succeeded["result"] == {"steps": 3}
    assert succeeded["progress"]["current"] == 3
    assert succeeded["attempt"] == 1

    # Cancelling a terminal job changes nothing.
    again = json_object(http.post(f"/v1/jobs/{job_id}/cancel"))
    assert again["status"] == "cancelled"
    assert again["version"] == cancelled["version"]

    missing = http.get("/v1/jobs/no-such-job")
    assert json_object(missing, 404)["status"] == 404
    assert missing.headers["content-type"].startswith(PROBLEM)

    # Original id 8 and v1 id "8" are the same job.
    start_job(http, 8, 1)
    wait_status(http, 8, "FINISHED", timeout=5.0)
    same = json_object(http.get("/v1/jobs/8"))
    assert (same["kind"], same["status"], same["params"]["n_steps"]) == ("steps", "succeeded", 1)
    answer = http.post("/v1/jobs", json={"id": "9", "kind": "steps", "params": {"n_steps": 0}})
    json_object(answer, 202)
    assert wait_status(http, 9, "FINISHED", timeout=5.0)["n_steps"] == 0
