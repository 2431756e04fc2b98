"""SAQ on PostgreSQL, as its users start it: ``saq peer_saq_postgres.settings``.

Settings (SAQ's defaults): one asyncio process (``--workers 1``), ``concurrency`` 10, dequeue
woken by LISTEN/NOTIFY (``poll_interval`` 0), a psycopg pool of 4 to 20 connections, job
results kept 600 s, logging at WARNING. Database ``bench_peers_saq_postgres``; SAQ creates its
tables when the queue connects. SAQ has no bulk enqueue; ``queue.enqueue("noop")`` is measured.
It drains a few hundred jobs a second here, so it runs at most 10,000 jobs.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from saq import Queue

import adapter
import jobtimes
import servers

NAME = "saq_postgres"


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op job."""
    jobtimes.noop()


settings = {"queue": Queue.from_url(servers.postgres_url(NAME)), "functions": [noop]}


class Adapter(adapter.PostgresPeer):
    """SAQ, PostgreSQL queue, one asyncio worker."""

    name = NAME
    package = "saq"
    max_jobs = 10_000
    settings: ClassVar[dict[str, Any]] = {
        "worker": "saq peer_saq_postgres.settings",
        "processes": "1 (--workers default)",
        "concurrency": "10 (default)",
        "dequeue": "LISTEN/NOTIFY (poll_interval 0, default)",
        "pool": "psycopg, 4-20 connections (default)",
        "result_ttl_s": 600,
        "logging": "WARNING (default)",
        "database": servers.postgres_database(NAME),
        "task": "async def",
        "enqueue": 'await queue.enqueue("noop")',
        "bulk": "none",
    }

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._queue: Any = None

    def install(self) -> None:
        """SAQ creates its tables on connect: :meth:`open` does it."""

    def open(self) -> None:
        if self._queue is not None:
            return

        async def go() -> Any:
            queue = Queue.from_url(servers.postgres_url(NAME))
            await queue.connect()
            return queue

        self._queue = self._client.run(go())

    def close(self) -> None:
        if self._queue is not None:
            self._client.run(self._queue.disconnect())
            self._queue = None
        self._client.shutdown()

    def enqueue(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await self._queue.enqueue("noop")

        self._client.run(go())

    def enqueue_one(self) -> float:
        async def go() -> float:
            started = time.time()
            await self._queue.enqueue("noop")
            return started

        return self._client.run(go())

    def worker_argv(self) -> list[str]:
        return [adapter.command("saq"), "peer_saq_postgres.settings"]
