"""Following a job: the long-poll ``wait`` and the server-sent ``events`` stream.

Neither polls the database per client: each waiter subscribes to the store's
:class:`~jobdeck.store.base.ChangeHub`, which the store wakes on every change it makes or
learns of from other processes, and re-reads the job only when woken. An open event stream
costs one subscription and one small task (the one that notices the client leaving).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Annotated

from fastapi import APIRouter, Header, Query, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from jobdeck.deck import Deck
from jobdeck.errors import JobNotFound, StoreUnavailable
from jobdeck.model import Job
from jobdeck.store.base import Store, Subscription

from . import documents as docs
from .problems import Problem
from .render import MAX_WAIT_SECONDS, job_response
from .schemas import JobIdPath

log = logging.getLogger("jobdeck")

#: Seconds between ``: keepalive`` comments on an idle event stream.
KEEPALIVE_SECONDS = 15.0


async def watch_until_terminal(
    store: Store, subscription: Subscription, job: Job, timeout: float
) -> Job | None:
    """Wait until ``job`` is terminal or ``timeout`` seconds pass; return its latest state
    (None if it was deleted meanwhile).

    ``subscription`` must have been taken on the job *before* ``job`` was read, so that no
    change between that read and the first wait goes unnoticed.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not job.is_terminal:
        remaining = deadline - loop.time()
        woken = remaining > 0 and await subscription.wait(remaining)
        latest = await store.get(job.id)  # at the deadline too: a wake-up may be in flight
        if latest is None:
            return None
        job = latest
        if not woken:
            break
    return job


class StreamSlots:
    """How many event streams each client holds open, bounded by a limit (429 beyond)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open: dict[str, int] = {}

    def acquire(self, client: str) -> bool:
        """Take a slot for ``client``; False when it holds ``limit`` already."""
        count = self._open.get(client, 0)
        if count >= self.limit:
            return False
        self._open[client] = count + 1
        return True

    def release(self, client: str) -> None:
        """Give back a slot taken by :meth:`acquire`."""
        count = self._open.get(client, 0) - 1
        if count > 0:
            self._open[client] = count
        else:
            self._open.pop(client, None)

    def open_streams(self, client: str | None = None) -> int:
        """Streams open for ``client`` (or for everybody)."""
        if client is not None:
            return self._open.get(client, 0)
        return sum(self._open.values())


def client_key(request: Request) -> str:
    """Whom a stream counts against: the client address (the API key, once there are keys)."""
    return request.client.host if request.client is not None else "unknown"


def sse_event(job: Job) -> bytes:
    """One ``text/event-stream`` event: ``id:`` the version, ``data:`` the job JSON."""
    data = json.dumps(job.to_dict(), ensure_ascii=False, separators=(",", ":"))
    return f"id: {job.version}\ndata: {data}\n\n".encode()


KEEPALIVE = b": keepalive\n\n"


class JobEventStream(Response):
    """The event stream of one job, as an ASGI response written by hand.

    The first event is the job's current state (unless the client's ``Last-Event-ID`` is at
    least its version: then the next change); then one event per change, always the latest
    snapshot; the stream ends after the terminal one, when the job is deleted, or when the
    client leaves. Idle streams get a ``: keepalive`` comment every ``keepalive`` seconds.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        store: Store,
        job_id: str,
        *,
        last_event_id: int | None,
        slots: StreamSlots,
        client: str,
        keepalive: float = KEEPALIVE_SECONDS,
    ) -> None:
        # No super().__init__: a streamed body has no length.
        self.status_code = 200
        self.background = None
        self.init_headers({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        self.store = store
        self.job_id = job_id
        self.last_event_id = last_event_id
        self.slots = slots
        self.client = client
        self.keepalive = keepalive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the stream; a client over its limit gets a 429 problem instead."""
        if not self.slots.acquire(self.client):
            problem = Problem(
                429,
                f"at most {self.slots.limit} event streams per client",
                slug="too-many-streams",
                title="Too many event streams",
                headers={"Retry-After": "5"},
            )
            await problem.response()(scope, receive, send)
            return
        try:
            with self.store.hub.subscribe(self.job_id) as subscription:
                await self._stream(subscription, receive, send)
        finally:
            self.slots.release(self.client)

    async def _stream(self, subscription: Subscription, receive: Receive, send: Send) -> None:
        gone = False

        async def notice_disconnect() -> None:
            nonlocal gone
            while True:
                message: Message = await receive()
                if message["type"] == "http.disconnect":
                    gone = True
                    subscription.notify()
                    return

        watcher = asyncio.create_task(notice_disconnect())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            job = await self.store.get(self.job_id)
            sent = self.last_event_id
            if job is not None and sent is not None and sent >= job.version:
                sent = job.version  # the client has it: wait for the next change
            while job is not None and not gone:
                if sent is None or job.version > sent:
                    await send(_body(sse_event(job)))
                    sent = job.version
                if job.is_terminal:
                    break
                while not await subscription.wait(self.keepalive):
                    await send(_body(KEEPALIVE))
                if gone:
                    break
                job = await self.store.get(self.job_id)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except (OSError, ClientDisconnect):
            pass  # the client left while we wrote
        except StoreUnavailable as exc:
            log.warning("event stream of job %s ends: %s", self.job_id, exc)
            with contextlib.suppress(OSError, ClientDisconnect):
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()
            try:
                await watcher
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise  # we are being cancelled ourselves: let it through


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


def _parse_event_id(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    if not value.isdecimal() or len(value) > 18:
        return None
    return int(value)


def add_event_routes(
    router: APIRouter, deck: Deck, *, keepalive_seconds: float = KEEPALIVE_SECONDS
) -> StreamSlots:
    """Add ``GET /v1/jobs/{id}/wait`` and ``GET /v1/jobs/{id}/events`` to ``router``;
    return the per-client stream counter they share."""
    slots = StreamSlots(deck.settings.max_streams_per_client)

    @router.get(
        "/v1/jobs/{job_id}/wait",
        name="jobdeck_wait_job",
        summary="Long-poll a job until it is terminal",
        response_model=None,
        responses={
            200: docs.job_body("the job, whatever its status"),
            **docs.problems({404: None, 422: "not a job id, or a timeout out of range", 503: None}),
        },
    )
    async def wait_job(
        job_id: JobIdPath,
        timeout: Annotated[
            float, Query(ge=0, le=MAX_WAIT_SECONDS, allow_inf_nan=False, description="seconds")
        ] = 30,
    ) -> Response:
        """Answer once the job is terminal or ``timeout`` seconds passed: the job, whatever
        its status."""
        with deck.store.hub.subscribe(job_id) as subscription:
            job = await deck.store.get(job_id)
            if job is None:
                raise JobNotFound(job_id)
            latest = await watch_until_terminal(deck.store, subscription, job, timeout)
        if latest is None:
            raise JobNotFound(job_id)
        return job_response(latest)

    @router.get(
        "/v1/jobs/{job_id}/events",
        name="jobdeck_job_events",
        summary="Stream a job's snapshots (server-sent events)",
        response_class=Response,
        responses={
            200: {
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
                "description": "the event stream: id is the job's version, data the job",
            },
            204: {"description": "the client has the terminal snapshot already"},
            **docs.problems(
                {
                    404: None,
                    422: "not a job id",
                    429: "too many open event streams for this client",
                    503: None,
                }
            ),
        },
    )
    async def job_events(
        job_id: JobIdPath,
        request: Request,
        last_event_id: Annotated[str | None, Header(max_length=64)] = None,
    ) -> Response:
        """``id:`` is the job's version, ``data:`` the job; the stream ends after the
        terminal snapshot."""
        job = await deck.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        resume_after = _parse_event_id(last_event_id)
        if resume_after is not None and job.is_terminal and resume_after >= job.version:
            # Nothing will follow; 204 tells an EventSource to stop reconnecting.
            return Response(status_code=204)
        return JobEventStream(
            deck.store,
            job_id,
            last_event_id=resume_after,
            slots=slots,
            client=client_key(request),
            keepalive=keepalive_seconds,
        )

    return slots
