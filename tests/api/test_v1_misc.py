"""Logs, kinds, stats, probes, Retry-After hints and the OpenAPI document."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from backends import Database
from jobdeck.api.render import prefer_wait, retry_after
from jobdeck.deck import Deck
from jobdeck.model import MICROS, now_us

pytestmark = pytest.mark.timeout(30)

ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]


async def test_probes(client: httpx.AsyncClient) -> None:
    health = await client.get("/health")
    assert (health.status_code, health.json()) == (200, {"health": "ok"})
    ready = await client.get("/ready")
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


async def test_kinds_list_every_registered_kind(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/kinds")
    assert response.status_code == 200
    items = response.json()["items"]
    assert [kind["name"] for kind in items] == ["add", "boom", "chatty", "slow", "steps"]
    by_name = {kind["name"]: kind for kind in items}
    assert set(by_name["add"]) == {
        "name",
        "queue",
        "max_attempts",
        "timeout",
        "isolation",
        "description",
        "params_schema",
    }
    assert by_name["add"]["isolation"] == "thread"
    assert by_name["add"]["description"] == "Add two numbers."
    assert by_name["add"]["params_schema"]["required"] == ["a", "b"]
    assert by_name["slow"]["queue"] == "slow"
    assert by_name["boom"]["max_attempts"] == 1
    steps = by_name["steps"]["params_schema"]["properties"]
    assert steps["n_steps"]["maximum"] == 1_000_000


async def test_stats_count_jobs_per_queue_and_status(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/stats")).json()["queues"] == {}
    for spec in ({"kind": "steps"}, {"kind": "steps"}, {"kind": "slow", "id": "s"}):
        await client.post("/v1/jobs", json=spec)
    await client.post("/v1/jobs/s/cancel")
    stats = (await client.get("/v1/stats")).json()
    assert set(stats) == {"queues", "workers", "finished_last_minute"}
    zero = {"queued": 0, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 0}
    assert stats["queues"] == {
        "default": {**zero, "queued": 2},
        "slow": {**zero, "cancelled": 1},
    }
    assert stats["workers"] == 0
    assert stats["finished_last_minute"] == 1


async def test_logs_walk_every_page(wclient: httpx.AsyncClient, problem: ProblemCheck) -> None:
    done = await wclient.post(
        "/v1/jobs", json={"kind": "chatty", "params": {"lines": 5}}, headers={"Prefer": "wait=10"}
    )
    job_id = done.json()["id"]
    assert done.json()["status"] == "succeeded"

    lines: list[dict] = []
    cursor = None
    while True:
        query = "?limit=2" + (f"&cursor={cursor}" if cursor else "")
        response = await wclient.get(f"/v1/jobs/{job_id}/logs{query}")
        assert response.status_code == 200
        body = response.json()
        assert len(body["items"]) <= 2
        lines += body["items"]
        if (cursor := body["next_cursor"]) is None:
            break
    assert [line["message"] for line in lines] == [f"line {n}" for n in range(5)]
    assert [line["seq"] for line in lines] == sorted(line["seq"] for line in lines)
    assert all(line["level"] == "info" and line["at"].endswith("Z") for line in lines)

    problem(await wclient.get("/v1/jobs/nope/logs"), 404)
    problem(await wclient.get(f"/v1/jobs/{job_id}/logs?cursor=garbage"), 422)
    problem(await wclient.get(f"/v1/jobs/{job_id}/logs?limit=1001"), 422)


async def test_logs_of_a_job_without_lines(client: httpx.AsyncClient) -> None:
    await client.post("/v1/jobs", json={"kind": "steps", "id": "quiet"})
    response = await client.get("/v1/jobs/quiet/logs")
    assert response.json() == {"items": [], "next_cursor": None}


async def test_openapi_document(client: httpx.AsyncClient) -> None:
    document = (await client.get("/openapi.json")).json()
    paths = document["paths"]
    for path in (
        "/v1/jobs",
        "/v1/jobs:batch",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/cancel",
        "/v1/jobs/{job_id}/retry",
        "/v1/jobs/{job_id}/wait",
        "/v1/jobs/{job_id}/events",
        "/v1/jobs/{job_id}/logs",
        "/v1/kinds",
        "/v1/stats",
        "/health",
        "/ready",
        "/get_job/{job_id}",
        "/start_job/{job_id}",
        "/stop_job/{job_id}",
    ):
        assert path in paths
    assert "JobRequest" in document["components"]["schemas"]


async def test_retry_after_hints(deck: Deck, client: httpx.AsyncClient) -> None:
    job = await deck.enqueue("steps", {}, delay=600)
    assert retry_after(job) == 60  # at most a minute
    soon = await deck.enqueue("steps", {}, delay=2.5)
    assert retry_after(soon, now=now_us()) in (2, 3)
    assert retry_after(job.evolve(run_at=now_us() - MICROS)) == 1


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([], None),
        (["wait=5"], 5),
        (["WAIT = 5"], 5),
        (['wait="7"'], 7),
        (["respond-async, wait=2.5"], 2.5),
        (["respond-async", "wait=3; x=y"], 3),
        (["wait=600"], 60),
        (["wait=0"], None),
        (["wait=-1"], None),
        (["wait=soon"], None),
        (["wait"], None),
        (["handling=lenient"], None),
    ],
)
def test_prefer_wait_parsing(values: list[str], expected: float | None) -> None:
    assert prefer_wait(values) == expected


async def test_the_app_lifespan_runs_the_deck(deck: Deck) -> None:
    from jobdeck.api import create_app

    app = create_app(deck)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/ready")).status_code == 200
        body = {"kind": "add", "params": {"a": 1, "b": 2}}
        done = await client.post("/v1/jobs", json=body, headers={"Prefer": "wait=10"})
        assert done.json()["result"] == 3  # the embedded worker ran it
    assert deck.worker is None  # stopped with the app


def test_create_app_without_a_deck_reads_the_environment(
    fresh_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    from jobdeck.api import create_app

    monkeypatch.setenv("JOBDECK_DATABASE_URL", fresh_database.database_url)
    if fresh_database.pg_schema is not None:
        monkeypatch.setenv("JOBDECK_PG_SCHEMA", fresh_database.pg_schema)
    monkeypatch.setenv("JOBDECK_MAX_STREAMS_PER_CLIENT", "7")
    app = create_app(compat=False)
    assert app.state.deck.settings.database_url == fresh_database.database_url
    if fresh_database.pg_schema is not None:
        assert app.state.deck.settings.pg_schema == fresh_database.pg_schema
    assert isinstance(app.state.deck.store, fresh_database.backend.store_class())
    assert app.state.deck.settings.max_streams_per_client == 7
    assert "/get_job/{job_id}" not in app.openapi()["paths"]
