"""Following a job: GET /v1/jobs/{id}/wait (long-poll) and /events (server-sent events)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from jobdeck.api import create_app
from jobdeck.api.v1 import build_router
from jobdeck.deck import Deck
from jobdeck.settings import Settings

pytestmark = pytest.mark.timeout(30)

Eventually = Callable[..., Awaitable[Any]]
ProblemCheck = Callable[[httpx.Response, int], dict[str, Any]]
RawStreamFactory = Callable[..., Any]
ParseEvents = Callable[[str], list[tuple[int, dict[str, Any]]]]


async def create(client: httpx.AsyncClient, **body: object) -> dict:
    response = await client.post("/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return response.json()


# --- wait -----------------------------------------------------------------------------------


async def test_wait_returns_when_the_job_changes_to_terminal(
    client: httpx.AsyncClient, deck: Deck, eventually: Eventually
) -> None:
    await create(client, kind="steps", id="w")
    started = time.monotonic()
    waiting = asyncio.create_task(client.get("/v1/jobs/w/wait?timeout=20"))

    async def subscribed() -> bool:
        return deck.store.hub.watched_ids() == ["w"]

    await eventually(subscribed, what="the waiter subscribed")
    assert not waiting.done()
    assert (await client.post("/v1/jobs/w/cancel")).status_code == 200
    response = await asyncio.wait_for(waiting, 10)
    assert response.status_code == 200
    assert response.json()["status"] == "cancelled"
    assert "retry-after" not in response.headers
    assert time.monotonic() - started < 10


async def test_wait_returns_the_job_as_it_is_at_the_timeout(client: httpx.AsyncClient) -> None:
    await create(client, kind="steps", id="w")
    started = time.monotonic()
    response = await client.get("/v1/jobs/w/wait?timeout=0.3")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.json()["status"] == "queued"
    assert response.headers["retry-after"] == "1"
    assert 0.25 <= elapsed < 5


async def test_wait_on_a_terminal_job_answers_at_once(client: httpx.AsyncClient) -> None:
    await create(client, kind="steps", id="w")
    await client.post("/v1/jobs/w/cancel")
    started = time.monotonic()
    response = await client.get("/v1/jobs/w/wait")  # default timeout 30
    assert response.json()["status"] == "cancelled"
    assert time.monotonic() - started < 5


async def test_wait_follows_a_job_the_worker_runs(wclient: httpx.AsyncClient) -> None:
    job = await create(wclient, kind="steps", params={"n_steps": 3, "step_seconds": 0.02})
    response = await wclient.get(f"/v1/jobs/{job['id']}/wait?timeout=20")
    assert response.json()["status"] == "succeeded"
    assert response.json()["progress"]["current"] == 3


async def test_wait_unknown_job_and_bad_timeouts(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    problem(await client.get("/v1/jobs/nope/wait?timeout=1"), 404)
    await create(client, kind="steps", id="w")
    for bad in ("61", "-1", "inf", "nan", "soon"):
        problem(await client.get(f"/v1/jobs/w/wait?timeout={bad}"), 422)


async def test_wait_leaves_no_subscription_behind(client: httpx.AsyncClient, deck: Deck) -> None:
    await create(client, kind="steps", id="w")
    await client.get("/v1/jobs/w/wait?timeout=0.05")
    assert deck.store.hub.watched_ids() == []


# --- events: whole streams over httpx ----------------------------------------------------------


async def test_events_of_a_terminal_job_are_its_state_then_the_end(
    client: httpx.AsyncClient, sse: ParseEvents
) -> None:
    await create(client, kind="steps", id="e")
    cancelled = (await client.post("/v1/jobs/e/cancel")).json()
    response = await client.get("/v1/jobs/e/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert "content-length" not in response.headers
    assert sse(response.text) == [(cancelled["version"], cancelled)]


async def test_events_follow_a_running_job_to_its_end(
    wclient: httpx.AsyncClient, sse: ParseEvents
) -> None:
    job = await create(wclient, kind="steps", params={"n_steps": 4, "step_seconds": 0.03})
    response = await wclient.get(f"/v1/jobs/{job['id']}/events")
    events = sse(response.text)
    versions = [version for version, _ in events]
    assert versions == sorted(set(versions))  # strictly increasing: never an older snapshot
    assert all(version == data["version"] for version, data in events)
    assert events[-1][1]["status"] == "succeeded"
    assert all(data["status"] != "succeeded" for _, data in events[:-1])
    assert len(events) >= 2


async def test_events_resume_after_last_event_id(
    client: httpx.AsyncClient, sse: ParseEvents
) -> None:
    job = await create(client, kind="steps", id="e")
    cancelled = (await client.post("/v1/jobs/e/cancel")).json()
    older = await client.get("/v1/jobs/e/events", headers={"Last-Event-ID": str(job["version"])})
    assert sse(older.text) == [(cancelled["version"], cancelled)]
    # The client has the terminal snapshot: 204 tells an EventSource to stop reconnecting.
    done = await client.get(
        "/v1/jobs/e/events", headers={"Last-Event-ID": str(cancelled["version"])}
    )
    assert done.status_code == 204
    ignored = await client.get("/v1/jobs/e/events", headers={"Last-Event-ID": "garbage"})
    assert sse(ignored.text) == [(cancelled["version"], cancelled)]


async def test_events_of_an_unknown_job_are_404(
    client: httpx.AsyncClient, problem: ProblemCheck
) -> None:
    problem(await client.get("/v1/jobs/nope/events"), 404)


# --- events: open streams, read as they come ---------------------------------------------------


async def test_first_event_is_the_current_state_then_each_change(
    client: httpx.AsyncClient, app: FastAPI, deck: Deck, raw_stream: RawStreamFactory
) -> None:
    job = await create(client, kind="steps", id="e")
    stream = await raw_stream(app, "/v1/jobs/e/events").open()
    assert stream.status == 200
    assert stream.response_headers["content-type"].startswith("text/event-stream")
    assert await stream.next_event() == (job["version"], job)

    cancelled = (await client.post("/v1/jobs/e/cancel")).json()
    assert await stream.next_event() == (cancelled["version"], cancelled)
    assert await stream.next_event() is None  # the stream ended after the terminal event
    await stream.finished()
    assert deck.store.hub.watched_ids() == []


async def test_last_event_id_at_the_current_version_waits_for_the_next_change(
    client: httpx.AsyncClient, app: FastAPI, raw_stream: RawStreamFactory
) -> None:
    job = await create(client, kind="steps", id="e")
    stream = raw_stream(
        app, "/v1/jobs/e/events", [(b"last-event-id", str(job["version"]).encode())]
    )
    await stream.open()
    with pytest.raises(TimeoutError):
        await stream.next_event(timeout=0.2)  # nothing new yet
    cancelled = (await client.post("/v1/jobs/e/cancel")).json()
    assert await stream.next_event() == (cancelled["version"], cancelled)
    assert await stream.next_event() is None


async def test_keepalive_comments_on_an_idle_stream(
    client: httpx.AsyncClient, deck: Deck, raw_stream: RawStreamFactory
) -> None:
    app = FastAPI()
    app.include_router(build_router(deck, keepalive_seconds=0.05))
    await create(client, kind="steps", id="e")
    stream = await raw_stream(app, "/v1/jobs/e/events").open()
    assert (await stream.next_block()).startswith("id: ")
    assert await stream.next_block() == ": keepalive"
    assert await stream.next_block() == ": keepalive"
    await stream.disconnect()


async def test_a_disconnect_frees_the_subscription(
    client: httpx.AsyncClient, app: FastAPI, deck: Deck, raw_stream: RawStreamFactory
) -> None:
    await create(client, kind="steps", id="e")
    stream = await raw_stream(app, "/v1/jobs/e/events").open()
    await stream.next_event()
    assert deck.store.hub.watched_ids() == ["e"]
    await stream.disconnect()
    assert deck.store.hub.watched_ids() == []


@pytest.fixture
def limited_deck(settings: Settings) -> Deck:
    return Deck(replace(settings, max_streams_per_client=2))


async def test_streams_per_client_are_limited(
    limited_deck: Deck, problem: ProblemCheck, raw_stream: Callable
) -> None:
    app = create_app(limited_deck)
    async with (
        limited_deck.running(worker=False),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client,
    ):
        await create(client, kind="steps", id="e")
        first = await raw_stream(app, "/v1/jobs/e/events").open()
        second = await raw_stream(app, "/v1/jobs/e/events").open()
        await first.next_event()
        await second.next_event()

        over = await client.get("/v1/jobs/e/events")  # httpx's client is 127.0.0.1 too
        document = problem(over, 429)
        assert document["type"].endswith("too-many-streams")
        other_client = await raw_stream(app, "/v1/jobs/e/events", client=("10.0.0.9", 1)).open()
        assert other_client.status == 200

        await first.disconnect()  # frees a slot
        third = await raw_stream(app, "/v1/jobs/e/events").open()
        assert third.status == 200
        await third.next_event()

        await client.post("/v1/jobs/e/cancel")  # every stream ends after the terminal event
        for stream in (second, third, other_client):
            await stream.read_body()
            await stream.finished()
        assert limited_deck.store.hub.watched_ids() == []
        # every slot is free again
        for _ in range(2):
            response = await client.get("/v1/jobs/e/events")
            assert response.status_code == 200


async def test_many_open_streams_are_cheap(
    client: httpx.AsyncClient, app: FastAPI, deck: Deck, raw_stream: RawStreamFactory
) -> None:
    jobs = [await create(client, kind="steps") for _ in range(3)]
    streams = []
    tasks_before = len(asyncio.all_tasks())
    for index in range(90):
        job = jobs[index % 3]
        address = (f"10.0.{index}.1", 1)
        streams.append(await raw_stream(app, f"/v1/jobs/{job['id']}/events", client=address).open())
    for stream in streams:
        await stream.next_event()
    # Per stream: the request task (here ours, in a server the server's), one disconnect
    # watcher, and on Python 3.11 the task asyncio.wait_for makes inside Subscription.wait.
    assert len(asyncio.all_tasks()) - tasks_before <= 3 * len(streams)
    for job in jobs:
        await client.post(f"/v1/jobs/{job['id']}/cancel")
    for stream in streams:
        assert (await stream.next_event())[1]["status"] == "cancelled"
        await stream.finished()
    assert deck.store.hub.watched_ids() == []
