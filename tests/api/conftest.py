"""Fixtures of the API tests: a real Deck on a fresh database, the app in-process over httpx.

Every test that uses the deck runs once per backend of :data:`backends.BACKENDS`: the
``settings`` fixture points at ``fresh_database`` (one database per test); modules that share
one deck build it on ``module_database`` (one per module and backend) with ``api_kit``.

``client`` serves the app with the store only (jobs stay queued until a test changes them);
``wclient`` also runs the embedded worker with short intervals. Both register a few small
test kinds on the deck. ``raw_stream`` drives one request by hand at the ASGI level, for event
streams that must be read while they are open (``httpx.ASGITransport`` buffers whole bodies).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from backends import Database
from jobdeck.api import create_app
from jobdeck.deck import Deck
from jobdeck.settings import Settings
from jobdeck.store.base import JobFilter
from jobdeck.tasks import JobContext

PROBLEM = "application/problem+json"


def register_test_kinds(deck: Deck) -> None:
    """Small kinds the API tests start."""

    @deck.task
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    @deck.task(max_attempts=1)
    def boom(message: str = "boom") -> None:
        """Always fails."""
        raise RuntimeError(message)

    @deck.task(queue="slow")
    async def slow(ctx: JobContext, seconds: float = 30.0) -> str:
        """Sleeps (cancellable) and succeeds."""
        await ctx.asleep(seconds)
        return "done"

    @deck.task
    def chatty(ctx: JobContext, lines: int = 5) -> int:
        """Logs some lines."""
        for number in range(lines):
            ctx.log(f"line {number}")
        return lines


def make_settings(database: Database, **changes: Any) -> Settings:
    """Settings on ``database``, with short intervals so that tests with a worker stay fast;
    ``changes`` override any of them."""
    values: dict[str, Any] = {
        "lease_seconds": 1,
        "poll_seconds": 0.01,
        "cancel_check_seconds": 0.05,
        "backoff_base_seconds": 0.01,
        "backoff_max_seconds": 0.05,
        "shutdown_grace_seconds": 0.2,
        "queues": ("default", "slow"),
    }
    return database.configure(Settings(**values)).with_(**changes)


def make_deck(settings: Settings) -> Deck:
    """A deck on ``settings`` with the test kinds; not started."""
    deck = Deck(settings)
    register_test_kinds(deck)
    return deck


def http_client(app: FastAPI) -> httpx.AsyncClient:
    """An httpx client on ``app`` in-process (the lifespan is not run: start the deck)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@asynccontextmanager
async def serving(
    deck: Deck, app: FastAPI | None = None, *, worker: bool = False
) -> AsyncIterator[httpx.AsyncClient]:
    """``deck`` started (with or without its worker) and a client on ``app``."""
    async with deck.running(worker=worker), http_client(app or create_app(deck)) as client:
        yield client


@pytest.fixture(scope="session")
def api_kit() -> SimpleNamespace:
    """Builders for module-scoped fixtures: ``settings(module_database, **changes)``,
    ``deck(settings)``, ``serving(deck, app=None, worker=False)``."""
    return SimpleNamespace(settings=make_settings, deck=make_deck, serving=serving)


@pytest.fixture
def settings(fresh_database: Database) -> Settings:
    """Settings on a fresh database of each backend in turn, short intervals."""
    return make_settings(fresh_database)


@pytest.fixture
def deck(settings: Settings) -> Deck:
    """A deck on a fresh database, with the test kinds; not started."""
    return make_deck(settings)


@pytest.fixture
def app(deck: Deck) -> FastAPI:
    return create_app(deck)


@pytest.fixture
async def client(deck: Deck, app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its store open and no worker: jobs stay queued."""
    async with serving(deck, app, worker=False) as client:
        yield client


@pytest.fixture
async def wclient(deck: Deck, app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its store open and the embedded worker running."""
    async with serving(deck, app, worker=True) as client:
        yield client


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """Check that ``response`` is a problem+json of ``status``; return its document."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status
    assert isinstance(body["type"], str) and body["type"]
    assert isinstance(body["title"], str) and body["title"]
    assert isinstance(body["detail"], str)
    return body


@pytest.fixture
def problem() -> Callable[[httpx.Response, int], dict[str, Any]]:
    """``problem(response, status)``: assert a problem+json answer, return its document."""
    return assert_problem


@pytest.fixture
def stored_ids(deck: Deck) -> Callable[[], Awaitable[list[str]]]:
    """``await stored_ids()``: ids of every job in the store, newest first."""

    async def ids() -> list[str]:
        page = await deck.store.list(JobFilter(), 1000, None)
        return [job.id for job in page.items]

    return ids


# --- driving an event stream by hand -------------------------------------------------------


@dataclass
class RawStream:
    """One GET request served by ``app`` at the ASGI level, read message by message."""

    app: Any
    path: str
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    client: tuple[str, int] = ("127.0.0.1", 50000)
    status: int | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    ended: bool = False
    _messages: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    _gone: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _buffer: str = ""

    async def open(self, timeout: float = 5.0) -> RawStream:
        """Start the request and wait for the response's start."""
        path, _, query = self.path.partition("?")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"test"), *self.headers],
            "client": self.client,
            "server": ("test", 80),
        }
        sent_request = False

        async def receive() -> dict[str, Any]:
            nonlocal sent_request
            if not sent_request:
                sent_request = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await self._gone.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            await self._messages.put(message)

        self._task = asyncio.create_task(self.app(scope, receive, send))
        start = await asyncio.wait_for(self._messages.get(), timeout)
        assert start["type"] == "http.response.start"
        self.status = start["status"]
        self.response_headers = {k.decode(): v.decode() for k, v in start["headers"]}
        return self

    async def read_body(self, timeout: float = 5.0) -> str:
        """The rest of the body, up to its end."""
        chunks = [self._buffer]
        self._buffer = ""
        while not self.ended:
            chunks.append(await self._next_chunk(timeout))
        return "".join(chunks)

    async def _next_chunk(self, timeout: float) -> str:
        message = await asyncio.wait_for(self._messages.get(), timeout)
        assert message["type"] == "http.response.body"
        if not message.get("more_body", False):
            self.ended = True
        return message.get("body", b"").decode()

    async def next_block(self, timeout: float = 5.0) -> str | None:
        """The next SSE block (an event or a comment), or None once the stream ended."""
        while "\n\n" not in self._buffer:
            if self.ended:
                return None
            self._buffer += await self._next_chunk(timeout)
        block, self._buffer = self._buffer.split("\n\n", 1)
        return block

    async def next_event(self, timeout: float = 5.0) -> tuple[int, dict[str, Any]] | None:
        """The next event as ``(id, job)``, skipping comments; None once the stream ended."""
        while True:
            block = await self.next_block(timeout)
            if block is None:
                return None
            if block.startswith(":"):
                continue
            return parse_event(block)

    async def disconnect(self, timeout: float = 5.0) -> None:
        """The client leaves; wait until the app has finished the request."""
        self._gone.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, timeout)

    async def finished(self, timeout: float = 5.0) -> None:
        """Wait until the app has finished the request by itself."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), timeout)


def parse_event(block: str) -> tuple[int, dict[str, Any]]:
    """``(id, data)`` of one SSE event block."""
    fields = dict(line.split(": ", 1) for line in block.strip("\n").split("\n"))
    return int(fields["id"]), json.loads(fields["data"])


def parse_events(text: str) -> list[tuple[int, dict[str, Any]]]:
    """Every event of a whole SSE body (comments skipped)."""
    blocks = [b for b in text.split("\n\n") if b.strip() and not b.startswith(":")]
    return [parse_event(block) for block in blocks]


@pytest.fixture
def raw_stream() -> Callable[..., RawStream]:
    """``raw_stream(app, "/v1/jobs/x/events", headers=[...])`` (then ``await .open()``)."""
    return RawStream


@pytest.fixture
def sse() -> Callable[[str], list[tuple[int, dict[str, Any]]]]:
    """Parse a whole ``text/event-stream`` body into ``[(id, job), ...]``."""
    return parse_events
