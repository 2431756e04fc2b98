"""POST /v1/jobs:batch: all or none, and the bad entry's index in 409/422 problems."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from backends import Database
from jobdeck.deck import Deck
from jobdeck.store.base import JobFilter

# One deck for the whole module: tests check that a refused batch adds nothing, whatever
# the others stored.
pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]

Count = Callable[[], Awaitable[int]]


@pytest.fixture(scope="module")
def deck(module_database: Database, api_kit: SimpleNamespace) -> Deck:
    """One deck for the module, on each backend in turn."""
    return api_kit.deck(api_kit.settings(module_database))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(deck: Deck, api_kit: SimpleNamespace) -> AsyncIterator[httpx.AsyncClient]:
    async with api_kit.serving(deck) as client:
        yield client


@pytest.fixture
def count(deck: Deck) -> Count:
    """``await count()``: how many jobs the store holds."""

    async def jobs() -> int:
        total, cursor = 0, None
        while True:
            page = await deck.store.list(JobFilter(), 1000, cursor)
            total += len(page.items)
            if (cursor := page.next_cursor) is None:
                return total

    return jobs


async def batch(client: httpx.AsyncClient, jobs: Any) -> httpx.Response:
    return await client.post("/v1/jobs:batch", json={"jobs": jobs})


async def test_batch_creates_every_job_in_order(client: httpx.AsyncClient) -> None:
    response = await batch(
        client,
        [
            {"kind": "add", "params": {"a": 1, "b": 2}, "id": "b1"},
            {"kind": "steps", "id": "b2", "queue": "q", "labels": {"x": "y"}},
            {"kind": "slow"},
        ],
    )
    assert response.status_code == 202
    assert response.headers["retry-after"] == "1"
    items = response.json()["items"]
    assert [job["id"] for job in items[:2]] == ["b1", "b2"]
    assert [job["kind"] for job in items] == ["add", "steps", "slow"]
    assert items[1]["queue"] == "q"
    for job in items:
        assert (await client.get(f"/v1/jobs/{job['id']}")).json() == job


async def test_batch_again_is_idempotent(client: httpx.AsyncClient, count: Count) -> None:
    jobs = [{"kind": "steps", "id": "x1"}, {"kind": "steps", "id": "x2"}]
    first = await batch(client, jobs)
    assert first.status_code == 202
    before = await count()
    again = await batch(client, jobs)
    assert again.status_code == 200
    assert again.json() == first.json()
    assert await count() == before


@pytest.mark.parametrize(
    ("bad", "slug"),
    [
        ({"kind": "nope"}, "unknown-kind"),
        ({"kind": "add", "params": {"a": "x", "b": 1}}, "invalid-params"),
        ({"kind": "add", "params": [1, 2]}, "invalid-params"),
        ({"kind": "steps", "unknown": 1}, "validation-error"),
        ({"kind": "steps", "id": "no spaces"}, "validation-error"),
        ({"kind": "steps", "delay": 1, "run_at": "2030-01-01T00:00:00Z"}, "validation-error"),
        ("not an object", "validation-error"),
        (None, "validation-error"),
    ],
)
async def test_a_bad_entry_stores_nothing_and_names_its_index(
    client: httpx.AsyncClient, problem: ProblemCheck, count: Count, bad: Any, slug: str
) -> None:
    before = await count()
    jobs = [{"kind": "steps", "id": "ok0"}, {"kind": "steps", "id": "ok1"}, bad]
    document = problem(await batch(client, jobs), 422)
    assert document["index"] == 2
    assert document["type"].endswith(slug)
    assert document["detail"].startswith("jobs[2]")
    assert all(error["loc"][:3] == ["body", "jobs", 2] for error in document["errors"])
    assert await count() == before
    assert (await client.get("/v1/jobs/ok0")).status_code == 404


async def test_an_id_conflict_stores_nothing_and_names_its_index(
    client: httpx.AsyncClient, problem: ProblemCheck, count: Count
) -> None:
    assert (await client.post("/v1/jobs", json={"kind": "steps", "id": "old"})).status_code == 202
    before = await count()
    jobs = [
        {"kind": "steps", "id": "new0"},
        {"kind": "steps", "id": "new1"},
        {"kind": "add", "params": {"a": 1, "b": 1}, "id": "old"},
    ]
    document = problem(await batch(client, jobs), 409)
    assert document["index"] == 2
    assert document["job_id"] == "old"
    assert "jobs[2]" in document["detail"]
    assert await count() == before
    assert (await client.get("/v1/jobs/new0")).status_code == 404


async def test_params_over_the_limit_name_the_index(
    client: httpx.AsyncClient, problem: ProblemCheck, count: Count
) -> None:
    before = await count()
    big = {"kind": "add", "params": {"a": 1, "b": 1, "pad": "x" * 2_000_000}}
    document = problem(await batch(client, [{"kind": "steps"}, big]), 413)
    assert document["index"] == 1
    assert await count() == before


@pytest.mark.parametrize(
    "body",
    [
        {"jobs": []},
        {"jobs": [{"kind": "steps"}] * 1001},
        {"jobs": {"kind": "steps"}},
        {},
        {"jobs": [{"kind": "steps"}], "extra": True},
        [{"kind": "steps"}],
    ],
)
async def test_malformed_batches_are_422(
    client: httpx.AsyncClient, problem: ProblemCheck, count: Count, body: Any
) -> None:
    before = await count()
    problem(await client.post("/v1/jobs:batch", json=body), 422)
    assert await count() == before


async def test_a_thousand_jobs_at_once(client: httpx.AsyncClient) -> None:
    response = await batch(client, [{"kind": "steps", "params": {"n_steps": 0}}] * 1000)
    assert response.status_code == 202
    assert len({job["id"] for job in response.json()["items"]}) == 1000
