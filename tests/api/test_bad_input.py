"""Bad input: every case answers 4xx application/problem+json and stores nothing."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import pytest_asyncio
from fastapi import FastAPI

from backends import Database
from jobdeck.api import create_app
from jobdeck.deck import Deck
from jobdeck.settings import Settings

# One deck for the whole module: every test here must leave the store empty.
pytestmark = [pytest.mark.timeout(30), pytest.mark.asyncio(loop_scope="module")]

ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]

StoredIds = Callable[[], Awaitable[list[str]]]

MAX_PARAMS = 300
MAX_BODY = 4000


@pytest.fixture(scope="module")
def settings(module_database: Database, api_kit: SimpleNamespace) -> Settings:
    """Small size limits, so that over-large documents are cheap to build; one database per
    module and backend."""
    return api_kit.settings(module_database, max_params_bytes=MAX_PARAMS, max_body_bytes=MAX_BODY)


@pytest.fixture(scope="module")
def deck(settings: Settings, api_kit: SimpleNamespace) -> Deck:
    return api_kit.deck(settings)


@pytest.fixture(scope="module")
def app(deck: Deck) -> FastAPI:
    return create_app(deck)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(
    deck: Deck, app: FastAPI, api_kit: SimpleNamespace
) -> AsyncIterator[httpx.AsyncClient]:
    async with api_kit.serving(deck, app) as client:
        yield client


BAD_JOBS: list[tuple[str, Any, int, str]] = [
    ("unknown kind", {"kind": "nope"}, 422, "unknown-kind"),
    ("NaN in params", {"kind": "slow", "params": {"seconds": float("nan")}}, 422, "invalid-params"),
    (
        "Infinity in params",
        {"kind": "slow", "params": {"seconds": float("inf")}},
        422,
        "invalid-params",
    ),
    ("kind missing", {"params": {}}, 422, "validation-error"),
    ("kind not a string", {"kind": 5}, 422, "validation-error"),
    (
        "params fail the schema",
        {"kind": "add", "params": {"a": "x", "b": 1}},
        422,
        "invalid-params",
    ),
    ("params miss a field", {"kind": "add", "params": {"a": 1}}, 422, "invalid-params"),
    (
        "params have an extra field",
        {"kind": "add", "params": {"a": 1, "b": 2, "c": 3}},
        422,
        "invalid-params",
    ),
    ("params out of range", {"kind": "steps", "params": {"n_steps": -1}}, 422, "invalid-params"),
    ("params a list", {"kind": "add", "params": [1, 2]}, 422, "invalid-params"),
    ("params a string", {"kind": "steps", "params": "n_steps=1"}, 422, "invalid-params"),
    ("params a number", {"kind": "steps", "params": 3}, 422, "invalid-params"),
    (
        "params too large",
        {"kind": "add", "params": {"a": 1, "b": 1, "pad": "x" * MAX_PARAMS}},
        413,
        "too-large",
    ),
    ("id too long", {"kind": "steps", "id": "a" * 129}, 422, "validation-error"),
    ("id starts with a dash", {"kind": "steps", "id": "-abc"}, 422, "validation-error"),
    ("id with a space", {"kind": "steps", "id": "a b"}, 422, "validation-error"),
    ("id with a slash", {"kind": "steps", "id": "a/b"}, 422, "validation-error"),
    ("id with a newline", {"kind": "steps", "id": "abc\n"}, 422, "validation-error"),
    ("id empty", {"kind": "steps", "id": ""}, 422, "validation-error"),
    ("id a number", {"kind": "steps", "id": 5}, 422, "validation-error"),
    ("queue malformed", {"kind": "steps", "queue": "no queue"}, 422, "validation-error"),
    ("unknown field", {"kind": "steps", "colour": "red"}, 422, "validation-error"),
    ("priority a string", {"kind": "steps", "priority": "5"}, 422, "validation-error"),
    ("priority a bool", {"kind": "steps", "priority": True}, 422, "validation-error"),
    ("priority too large", {"kind": "steps", "priority": 10**10}, 422, "validation-error"),
    ("max_attempts 0", {"kind": "steps", "max_attempts": 0}, 422, "validation-error"),
    ("max_attempts too many", {"kind": "steps", "max_attempts": 1001}, 422, "validation-error"),
    ("timeout 0", {"kind": "steps", "timeout": 0}, 422, "validation-error"),
    ("timeout negative", {"kind": "steps", "timeout": -1}, 422, "validation-error"),
    ("delay negative", {"kind": "steps", "delay": -1}, 422, "validation-error"),
    ("delay a string", {"kind": "steps", "delay": "1"}, 422, "validation-error"),
    ("run_at malformed", {"kind": "steps", "run_at": "tomorrow"}, 422, "validation-error"),
    ("run_at a number", {"kind": "steps", "run_at": 1700000000}, 422, "validation-error"),
    (
        "run_at after the year 9999 in UTC",
        {"kind": "steps", "run_at": "9999-12-31T23:00:00-05:00"},
        422,
        "validation-error",
    ),
    (
        "run_at before the year 1 in UTC",
        {"kind": "steps", "run_at": "0001-01-01T00:00:00+01:00"},
        422,
        "validation-error",
    ),
    ("priority with a fraction", {"kind": "steps", "priority": 1.5}, 422, "validation-error"),
    ("max_attempts 1001.0", {"kind": "steps", "max_attempts": 1001.0}, 422, "validation-error"),
    (
        "run_at and delay",
        {"kind": "steps", "run_at": "2030-01-01T00:00:00Z", "delay": 1},
        422,
        "validation-error",
    ),
    ("label key malformed", {"kind": "steps", "labels": {"a b": "x"}}, 422, "validation-error"),
    ("label key with a colon", {"kind": "steps", "labels": {"a:b": "x"}}, 422, "validation-error"),
    ("label value not a string", {"kind": "steps", "labels": {"a": 1}}, 422, "validation-error"),
    (
        "label value too long",
        {"kind": "steps", "labels": {"a": "x" * 1025}},
        422,
        "validation-error",
    ),
    (
        "too many labels",
        {"kind": "steps", "labels": {f"k{i}": "v" for i in range(65)}},
        422,
        "validation-error",
    ),
    ("labels a list", {"kind": "steps", "labels": ["a"]}, 422, "validation-error"),
    ("body a list", [{"kind": "steps"}], 422, "validation-error"),
    ("body a string", "steps", 422, "validation-error"),
    ("body null", None, 422, "validation-error"),
]


@pytest.mark.parametrize(
    ("body", "status", "slug"),
    [pytest.param(body, status, slug, id=name) for name, body, status, slug in BAD_JOBS],
)
async def test_bad_jobs_are_refused(
    client: httpx.AsyncClient,
    problem: ProblemCheck,
    stored_ids: StoredIds,
    body: Any,
    status: int,
    slug: str,
) -> None:
    response = await client.post(
        "/v1/jobs", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    document = problem(response, status)
    assert document["type"].endswith(slug)
    if status == 422:
        assert document["errors"], document
        for error in document["errors"]:
            assert set(error) == {"loc", "msg", "type"}
    assert await stored_ids() == []


async def test_invalid_params_list_what_is_wrong(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    response = await client.post("/v1/jobs", json={"kind": "add", "params": {"a": "x"}})
    document = problem(response, 422)
    locs = sorted(tuple(error["loc"]) for error in document["errors"])
    assert locs == [("body", "params", "a"), ("body", "params", "b")]


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{bad json", "application/json"),
        (b'{"kind": "steps"', "application/json"),
        (b"", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b'{"kind": "steps"}', "text/plain"),
        (b"kind=steps", "application/x-www-form-urlencoded"),
        (b'{"kind": "steps", "params": NaN}', "application/json"),
    ],
)
async def test_malformed_bodies_are_refused(
    client: httpx.AsyncClient,
    problem: ProblemCheck,
    stored_ids: StoredIds,
    content: bytes,
    content_type: str,
) -> None:
    response = await client.post(
        "/v1/jobs", content=content, headers={"content-type": content_type}
    )
    assert 400 <= response.status_code < 500
    problem(response, response.status_code)
    assert await stored_ids() == []


async def test_a_body_over_the_limit_is_413(
    client: httpx.AsyncClient, problem: ProblemCheck, stored_ids: StoredIds
) -> None:
    body = json.dumps({"kind": "steps", "labels": {"a": "x" * MAX_BODY}}).encode()
    response = await client.post(
        "/v1/jobs", content=body, headers={"content-type": "application/json"}
    )
    problem(response, 413)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it streams
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    streamed = await client.post(
        "/v1/jobs", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in streamed.request.headers
    problem(streamed, 413)
    batch = json.dumps({"jobs": [{"kind": "steps"}] * 500}).encode()
    problem(
        await client.post(
            "/v1/jobs:batch", content=batch, headers={"content-type": "application/json"}
        ),
        413,
    )
    assert await stored_ids() == []


async def test_a_body_over_the_limit_on_a_route_without_body(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    problem(await client.post("/v1/jobs/x/cancel", content=b"x" * (MAX_BODY + 1)), 413)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/jobs/" + "a" * 129),
        ("GET", "/v1/jobs/-a"),
        ("GET", "/v1/jobs/a%20b"),
        ("POST", "/v1/jobs/" + "a" * 129 + "/cancel"),
        ("POST", "/v1/jobs/" + "a" * 129 + "/retry"),
        ("DELETE", "/v1/jobs/" + "a" * 129),
        ("GET", "/v1/jobs/" + "a" * 129 + "/logs"),
        ("GET", "/v1/jobs/" + "a" * 129 + "/wait?timeout=0"),
        ("GET", "/v1/jobs/" + "a" * 129 + "/events"),
        ("GET", "/v1/jobs/a/wait?timeout=61"),
        ("GET", "/v1/jobs/a/wait?timeout=-1"),
        ("GET", "/v1/jobs?limit=1001"),
        ("GET", "/v1/jobs/a/logs?limit=1001"),
        ("GET", "/v1/jobs?label=a%00b:v"),
        ("GET", "/v1/jobs?label=a%20b:v"),
        ("GET", "/v1/jobs?label=" + "a" * 129 + ":v"),
        ("GET", "/v1/jobs?label=novalue"),
    ],
)
async def test_ids_and_query_values_out_of_range_are_422(
    client: httpx.AsyncClient, problem: ProblemCheck, method: str, path: str
) -> None:
    """Job ids in paths follow the rule of ids in bodies (at most 128 characters, DESIGN §2);
    ``limit`` is at most 1000, a ``wait`` timeout 0 to 60 seconds, and a ``label`` filter
    names a key that a label can have (a NUL in it once reached the SQL as a JSON path)."""
    problem(await client.request(method, path), 422)


@pytest.mark.parametrize(
    "path",
    [
        "/start_job/1?n_steps=abc",
        "/start_job/1?n_steps=1.5",
        "/start_job/1?n_steps=1.0",
        "/start_job/1?n_steps=-1",
        "/start_job/1?n_steps=1000001",
        "/start_job/1?n_steps=",
        "/start_job/1",
        "/start_job/-1?n_steps=1",
        "/start_job/abc?n_steps=1",
        "/start_job/1.5?n_steps=1",
        "/start_job/1?n_steps=1&step_seconds=-1",
        "/start_job/1?n_steps=1&step_seconds=3601",
        "/start_job/1?n_steps=1&step_seconds=nan",
        "/start_job/1?n_steps=1&step_seconds=x",
        "/start_job/" + "9" * 129 + "?n_steps=1",
    ],
)
async def test_bad_start_job_requests_are_422(
    client: httpx.AsyncClient, problem: ProblemCheck, stored_ids: StoredIds, path: str
) -> None:
    problem(await client.post(path), 422)
    assert await stored_ids() == []


@pytest.mark.parametrize("path", ["/get_job/-1", "/get_job/x", "/stop_job/-3", "/stop_job/1e3"])
async def test_bad_compat_ids_are_422(
    client: httpx.AsyncClient, problem: ProblemCheck, path: str
) -> None:
    method = client.get if path.startswith("/get") else client.post
    problem(await method(path), 422)


async def test_unknown_routes_and_methods(client: httpx.AsyncClient, problem: ProblemCheck) -> None:
    problem(await client.get("/nowhere"), 404)
    problem(await client.get("/v1/jobs/a/b/c"), 404)
    not_allowed = problem(await client.put("/v1/jobs"), 405)
    assert not_allowed["type"] == "about:blank"
    # Every method of the path, though GET and POST /v1/jobs are two routes.
    assert (await client.put("/v1/jobs")).headers["allow"] == "GET, POST"
    assert (await client.post("/v1/jobs/x")).headers["allow"] == "DELETE, GET"
    problem(await client.get("/v1/jobs:batch"), 405)
    problem(await client.delete("/get_job/1"), 405)


async def test_a_store_that_does_not_answer_is_503(
    fresh_database: Database, api_kit: SimpleNamespace, problem: ProblemCheck
) -> None:
    app = create_app(api_kit.deck(api_kit.settings(fresh_database)))  # not started: no store
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        problem(await client.get("/ready"), 503)
        document = problem(await client.get("/v1/jobs/x"), 503)
        assert document["type"].endswith("store-unavailable")
        assert (await client.get("/health")).status_code == 200
