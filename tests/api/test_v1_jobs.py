"""POST/GET/DELETE of single jobs, cancel, retry, Prefer: wait, Retry-After, mounting."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from jobdeck.deck import Deck
from jobdeck.model import parse_time

pytestmark = pytest.mark.timeout(30)

Eventually = Callable[..., Awaitable[Any]]
ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]


async def create(client: httpx.AsyncClient, **body: object) -> httpx.Response:
    return await client.post("/v1/jobs", json=body)


# --- create and get -----------------------------------------------------------------------


async def test_create_answers_202_with_the_job_and_location(client: httpx.AsyncClient) -> None:
    response = await create(
        client,
        kind="add",
        params={"a": 1, "b": 2},
        id="job-1",
        queue="q1",
        priority=5,
        max_attempts=7,
        timeout=12.5,
        labels={"team": "red"},
    )
    assert response.status_code == 202
    assert response.headers["location"] == "/v1/jobs/job-1"
    assert response.headers["retry-after"] == "1"
    job = response.json()
    assert job["id"] == "job-1"
    assert job["kind"] == "add"
    assert job["params"] == {"a": 1, "b": 2}
    assert (job["queue"], job["priority"], job["max_attempts"]) == ("q1", 5, 7)
    assert job["timeout"] == 12.5
    assert job["labels"] == {"team": "red"}
    assert job["status"] == "queued"
    assert job["created_at"].endswith("Z")

    fetched = await client.get("/v1/jobs/job-1")
    assert fetched.status_code == 200
    assert fetched.json() == job
    assert fetched.headers["retry-after"] == "1"


async def test_create_without_id_makes_one_and_fills_defaults(client: httpx.AsyncClient) -> None:
    response = await create(client, kind="steps")
    assert response.status_code == 202
    job = response.json()
    assert len(job["id"]) == 26
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["params"] == {"n_steps": 10, "step_seconds": 1.0}
    assert (job["queue"], job["priority"], job["max_attempts"], job["timeout"]) == (
        "default",
        0,
        3,
        None,
    )


async def test_the_kind_gives_queue_and_attempts_when_omitted(client: httpx.AsyncClient) -> None:
    job = (await create(client, kind="slow")).json()
    assert job["queue"] == "slow"
    assert (await create(client, kind="boom")).json()["max_attempts"] == 1


async def test_delay_and_run_at_set_the_start_time(client: httpx.AsyncClient) -> None:
    before = time.time()
    delayed = await create(client, kind="steps", delay=30)
    assert delayed.status_code == 202
    run_at = parse_time(delayed.json()["run_at"]) / 1e6
    assert before + 29 < run_at < time.time() + 31
    assert 25 <= int(delayed.headers["retry-after"]) <= 30

    at = await create(client, kind="steps", run_at="2030-01-02T03:04:05.5+01:00")
    assert at.status_code == 202
    assert at.json()["run_at"] == "2030-01-02T02:04:05.500000Z"


async def test_same_id_same_spec_is_idempotent(client: httpx.AsyncClient) -> None:
    body = {"kind": "add", "params": {"a": 1, "b": 2}, "id": "once", "labels": {"k": "v"}}
    first = await client.post("/v1/jobs", json=body)
    assert first.status_code == 202
    again = await client.post("/v1/jobs", json={**body, "delay": 5})  # run_at is not compared
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["location"] == "/v1/jobs/once"
    listed = (await client.get("/v1/jobs")).json()["items"]
    assert [job["id"] for job in listed] == ["once"]


@pytest.mark.parametrize(
    "change",
    [
        {"params": {"a": 1, "b": 3}},
        {"kind": "steps", "params": {}},
        {"queue": "other"},
        {"priority": 1},
        {"max_attempts": 9},
        {"timeout": 3},
        {"labels": {"k": "w"}},
    ],
)
async def test_same_id_other_spec_is_409(
    client: httpx.AsyncClient, problem: ProblemCheck, change: dict[str, object]
) -> None:
    body = {"kind": "add", "params": {"a": 1, "b": 2}, "id": "taken", "labels": {"k": "v"}}
    assert (await client.post("/v1/jobs", json=body)).status_code == 202
    response = await client.post("/v1/jobs", json={**body, **change})
    document = problem(response, 409)
    assert document["type"].endswith("job-id-taken")
    assert document["job_id"] == "taken"
    assert "index" not in document
    assert (await client.get("/v1/jobs/taken")).json()["params"] == {"a": 1, "b": 2}


async def test_unknown_job_is_404(client: httpx.AsyncClient, problem: ProblemCheck) -> None:
    document = problem(await client.get("/v1/jobs/nope"), 404)
    assert document["type"].endswith("job-not-found")
    assert document["job_id"] == "nope"


async def test_ids_with_dots_and_colons_route_to_the_job(client: httpx.AsyncClient) -> None:
    assert (await create(client, kind="steps", id="a.b:c-1")).status_code == 202
    assert (await client.get("/v1/jobs/a.b:c-1")).json()["id"] == "a.b:c-1"
    assert (await client.post("/v1/jobs/a.b:c-1/cancel")).json()["status"] == "cancelled"


async def test_changes_are_logged(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="jobdeck")
    await create(client, kind="add", params={"a": 1, "b": 1}, id="logged")
    await client.post("/v1/jobs/logged/cancel")
    await client.post("/v1/jobs/logged/retry")
    await client.post("/v1/jobs/logged/cancel")
    await client.delete("/v1/jobs/logged")
    lines = [
        r.getMessage() for r in caplog.records if r.name == "jobdeck" and "logged" in r.getMessage()
    ]
    assert lines == [
        "job logged kind=add created",
        "job logged kind=add cancelled",
        "job logged kind=add retried",
        "job logged kind=add cancelled",
        "job logged kind=add deleted",
    ]


# --- Prefer: wait ---------------------------------------------------------------------------


async def test_prefer_wait_answers_200_with_the_terminal_job(wclient: httpx.AsyncClient) -> None:
    response = await wclient.post(
        "/v1/jobs", json={"kind": "add", "params": {"a": 2, "b": 3}}, headers={"Prefer": "wait=10"}
    )
    assert response.status_code == 200
    assert response.headers["preference-applied"] == "wait=10"
    job = response.json()
    assert job["status"] == "succeeded"
    assert job["result"] == 5
    assert "retry-after" not in response.headers
    assert response.headers["location"] == f"/v1/jobs/{job['id']}"


async def test_prefer_wait_gives_up_after_n_seconds(wclient: httpx.AsyncClient) -> None:
    started = time.monotonic()
    response = await wclient.post(
        "/v1/jobs",
        json={"kind": "slow", "params": {"seconds": 30}},
        headers={"Prefer": "respond-async, wait=0.3"},
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "running")
    assert response.headers["retry-after"] == "1"
    assert 0.25 <= elapsed < 5


async def test_prefer_wait_is_clamped_to_60(
    client: httpx.AsyncClient, deck: Deck, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobdeck.api import v1

    seen: list[float] = []

    async def fake_watch(store, subscription, job, timeout):  # type: ignore[no-untyped-def]
        seen.append(timeout)
        return job

    monkeypatch.setattr(v1, "watch_until_terminal", fake_watch)
    response = await client.post(
        "/v1/jobs", json={"kind": "steps"}, headers={"Prefer": "wait=3600"}
    )
    assert seen == [60]
    assert response.headers["preference-applied"] == "wait=60"
    assert response.status_code == 202


async def test_unknown_preferences_are_ignored(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/v1/jobs", json={"kind": "steps"}, headers={"Prefer": "handling=strict, wait=soon"}
    )
    assert response.status_code == 202
    assert "preference-applied" not in response.headers


# --- cancel ---------------------------------------------------------------------------------


async def test_cancel_a_queued_job_is_200_cancelled(client: httpx.AsyncClient) -> None:
    await create(client, kind="steps", id="q")
    response = await client.post("/v1/jobs/q/cancel")
    assert response.status_code == 200
    job = response.json()
    assert job["status"] == "cancelled"
    assert "retry-after" not in response.headers


async def test_cancel_a_running_job_is_202_then_cancelled(
    wclient: httpx.AsyncClient, eventually: Eventually
) -> None:
    await create(wclient, kind="slow", id="r", params={"seconds": 30})

    async def running() -> bool:
        return (await wclient.get("/v1/jobs/r")).json()["status"] == "running"

    await eventually(running, what="job running")
    response = await wclient.post("/v1/jobs/r/cancel")
    assert response.status_code == 202
    assert response.json()["cancel_requested"] is True
    assert response.headers["retry-after"] == "1"
    twice = await wclient.post("/v1/jobs/r/cancel")
    assert (twice.status_code, twice.json()["status"]) in {(202, "running"), (200, "cancelled")}

    async def cancelled() -> bool:
        return (await wclient.get("/v1/jobs/r")).json()["status"] == "cancelled"

    await eventually(cancelled, what="job cancelled")
    again = await wclient.post("/v1/jobs/r/cancel")
    assert again.status_code == 200
    assert again.json()["status"] == "cancelled"


async def test_cancel_a_terminal_job_changes_nothing(wclient: httpx.AsyncClient) -> None:
    done = await wclient.post(
        "/v1/jobs", json={"kind": "add", "params": {"a": 1, "b": 1}}, headers={"Prefer": "wait=10"}
    )
    job = done.json()
    assert job["status"] == "succeeded"
    response = await wclient.post(f"/v1/jobs/{job['id']}/cancel")
    assert response.status_code == 200
    assert response.json() == job


async def test_cancel_unknown_is_404(client: httpx.AsyncClient, problem: ProblemCheck) -> None:
    problem(await client.post("/v1/jobs/nope/cancel"), 404)


# --- retry ----------------------------------------------------------------------------------


async def test_retry_a_failed_job(wclient: httpx.AsyncClient, eventually: Eventually) -> None:
    failed = await wclient.post(
        "/v1/jobs", json={"kind": "boom", "id": "f"}, headers={"Prefer": "wait=10"}
    )
    assert failed.json()["status"] == "failed"
    assert failed.json()["error"]["type"] == "RuntimeError"

    response = await wclient.post("/v1/jobs/f/retry")
    assert response.status_code == 202
    assert response.json()["status"] in ("queued", "running", "failed")
    assert response.json()["max_attempts"] >= 2

    async def failed_twice() -> dict | None:
        job = (await wclient.get("/v1/jobs/f")).json()
        return job if job["status"] == "failed" and job["attempt"] == 2 else None

    job = await eventually(failed_twice, what="second failure")
    assert len(job["attempt_errors"]) == 2


async def test_retry_a_cancelled_job(client: httpx.AsyncClient) -> None:
    await create(client, kind="steps", id="c")
    await client.post("/v1/jobs/c/cancel")
    response = await client.post("/v1/jobs/c/retry")
    assert response.status_code == 202
    assert response.json()["status"] == "queued"
    assert response.headers["retry-after"] == "1"


async def test_retry_a_succeeded_job_is_409(
    wclient: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    done = await wclient.post(
        "/v1/jobs", json={"kind": "add", "params": {"a": 1, "b": 1}}, headers={"Prefer": "wait=10"}
    )
    problem(await wclient.post(f"/v1/jobs/{done.json()['id']}/retry"), 409)


async def test_retry_queued_is_409_and_unknown_404(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    await create(client, kind="steps", id="q")
    document = problem(await client.post("/v1/jobs/q/retry"), 409)
    assert document["job_id"] == "q"
    problem(await client.post("/v1/jobs/nope/retry"), 404)


# --- delete ---------------------------------------------------------------------------------


async def test_delete_a_terminal_job(client: httpx.AsyncClient, problem: ProblemCheck) -> None:
    await create(client, kind="steps", id="d")
    await client.post("/v1/jobs/d/cancel")
    response = await client.delete("/v1/jobs/d")
    assert response.status_code == 204
    assert response.content == b""
    problem(await client.get("/v1/jobs/d"), 404)
    problem(await client.delete("/v1/jobs/d"), 404)


async def test_delete_an_active_job_is_409(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    await create(client, kind="steps", id="a")
    document = problem(await client.delete("/v1/jobs/a"), 409)
    assert document["type"].endswith("job-active")
    assert (await client.get("/v1/jobs/a")).status_code == 200


# --- mounting -------------------------------------------------------------------------------


async def test_router_mounted_under_a_prefix_in_a_host_app(
    deck: Deck, problem: ProblemCheck
) -> None:
    host = FastAPI()  # no jobdeck handlers, no middleware

    @host.get("/")
    async def home() -> str:
        return "host"

    host.include_router(deck.router, prefix="/jobs")
    async with (
        deck.running(worker=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://h") as client,
    ):
        assert (await client.get("/")).json() == "host"
        created = await client.post("/jobs/v1/jobs", json={"kind": "steps", "id": "m"})
        assert created.status_code == 202
        assert created.headers["location"] == "/jobs/v1/jobs/m"
        assert (await client.get("/jobs/v1/jobs/m")).json()["id"] == "m"
        problem(await client.get("/jobs/v1/jobs/nope"), 404)
        problem(await client.post("/jobs/v1/jobs", json={"kind": "steps", "x": 1}), 422)
        problem(await client.post("/jobs/v1/jobs", json={"kind": "nope"}), 422)
        problem(await client.get("/jobs/v1/jobs?limit=0"), 422)
        assert (await client.get("/jobs/v1/jobs")).json()["items"][0]["id"] == "m"
