"""GET /v1/jobs: filters, limits and walking every page with the cursor."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio

from backends import Database
from jobdeck.deck import Deck

# One deck for the whole module: the tests only read the jobs of the ``jobs`` fixture.
pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]


@pytest.fixture(scope="module")
def deck(module_database: Database, api_kit: SimpleNamespace) -> Deck:
    """One deck for the module, on each backend in turn."""
    return api_kit.deck(api_kit.settings(module_database))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(deck: Deck, api_kit: SimpleNamespace) -> AsyncIterator[httpx.AsyncClient]:
    async with api_kit.serving(deck) as client:
        yield client


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def jobs(client: httpx.AsyncClient) -> list[str]:
    """Twelve jobs (oldest first) of several kinds, queues, labels and statuses."""
    specs = []
    for number in range(12):
        spec: dict[str, object] = {"id": f"j{number:02d}"}
        if number % 3 == 0:
            spec |= {"kind": "add", "params": {"a": number, "b": 0}}
        else:
            spec |= {"kind": "steps", "params": {"n_steps": number}}
        spec["queue"] = "even" if number % 2 == 0 else "odd"
        spec["labels"] = {"team": "red" if number < 6 else "blue", "n": str(number)}
        specs.append(spec)
    for spec in specs:  # one at a time: newest first is creation order reversed
        assert (await client.post("/v1/jobs", json=spec)).status_code == 202
    for number in (1, 4, 7):
        assert (await client.post(f"/v1/jobs/j{number:02d}/cancel")).status_code == 200
    return [str(spec["id"]) for spec in specs]


async def listed(client: httpx.AsyncClient, query: str = "") -> list[str]:
    response = await client.get(f"/v1/jobs{query}")
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"items", "next_cursor"}
    return [job["id"] for job in body["items"]]


async def test_lists_newest_first(client: httpx.AsyncClient, jobs: list[str]) -> None:
    response = await client.get("/v1/jobs")
    body = response.json()
    assert [job["id"] for job in body["items"]] == jobs[::-1]
    assert body["next_cursor"] is None
    assert body["items"][0]["status"] == "queued"
    assert response.headers["retry-after"] == "1"


@pytest.mark.parametrize("limit", [1, 5, 11, 12])
async def test_cursor_walks_every_page(
    client: httpx.AsyncClient, jobs: list[str], limit: int
) -> None:
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        query = f"?limit={limit}" + (f"&cursor={cursor}" if cursor else "")
        body = (await client.get(f"/v1/jobs{query}")).json()
        assert len(body["items"]) <= limit
        seen += [job["id"] for job in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
        assert pages <= len(jobs)
    assert seen == jobs[::-1]
    assert pages == -(-len(jobs) // limit)  # no empty last page


async def test_cursor_with_filters(client: httpx.AsyncClient, jobs: list[str]) -> None:
    first = (await client.get("/v1/jobs?kind=steps&limit=3")).json()
    second = (await client.get(f"/v1/jobs?kind=steps&limit=3&cursor={first['next_cursor']}")).json()
    ids = [job["id"] for job in first["items"] + second["items"]]
    assert ids == ["j11", "j10", "j08", "j07", "j05", "j04"]


async def test_filter_by_status(client: httpx.AsyncClient, jobs: list[str]) -> None:
    assert await listed(client, "?status=cancelled") == ["j07", "j04", "j01"]
    both = await listed(client, "?status=cancelled&status=queued")
    assert sorted(both) == sorted(jobs)
    assert await listed(client, "?status=running") == []


async def test_filter_by_kind_and_queue(client: httpx.AsyncClient, jobs: list[str]) -> None:
    assert await listed(client, "?kind=add") == ["j09", "j06", "j03", "j00"]
    assert await listed(client, "?kind=add&queue=even") == ["j06", "j00"]
    assert await listed(client, "?queue=odd&queue=even") == jobs[::-1]
    assert await listed(client, "?kind=add&kind=steps&status=cancelled") == ["j07", "j04", "j01"]
    assert await listed(client, "?kind=nope") == []


async def test_filter_by_labels(client: httpx.AsyncClient, jobs: list[str]) -> None:
    assert await listed(client, "?label=team:blue&kind=add") == ["j09", "j06"]
    assert await listed(client, "?label=team:red&label=n:3") == ["j03"]
    assert await listed(client, "?label=team:green") == []


async def test_limit_is_bounded(
    client: httpx.AsyncClient, problem: ProblemCheck, jobs: list[str]
) -> None:
    assert len(await listed(client, "?limit=1000")) == len(jobs)
    for bad in ("0", "1001", "-1", "ten"):
        document = problem(await client.get(f"/v1/jobs?limit={bad}"), 422)
        assert document["errors"][0]["loc"] == ["query", "limit"]


@pytest.mark.parametrize(
    "query",
    [
        "?cursor=garbage",
        "?cursor=",
        "?cursor=%FF%FE",
        "?cursor=" + "A" * 600,
        "?status=nope",
        "?label=nocolon",
        "?label=:value",
        "?" + "&".join(["kind=k"] * 101),
    ],
)
async def test_bad_query_values_are_422(
    client: httpx.AsyncClient, problem: ProblemCheck, jobs: list[str], query: str
) -> None:
    problem(await client.get(f"/v1/jobs{query}"), 422)
