"""pgqueuer on PostgreSQL, as its users start it: ``pgq run peer_pgqueuer:main``.

Settings (pgqueuer's defaults): one asyncio process on one asyncpg connection, ``batch_size``
10 jobs per dequeue, no concurrency limit, new jobs noticed by LISTEN/NOTIFY with a 30 s
``dequeue_timeout``, heartbeat timeout 30 s, finished jobs moved to the log table. Database
``bench_peers_pgqueuer``; the schema is installed with ``Queries.install()`` (what
``pgq install`` does). Bulk enqueue: ``Queries.enqueue`` with lists (one INSERT per batch).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar

import asyncpg
from pgqueuer import PgQueuer
from pgqueuer.db import AsyncpgDriver
from pgqueuer.models import Job
from pgqueuer.queries import Queries

import adapter
import jobtimes
import servers

NAME = "pgqueuer"


@asynccontextmanager
async def main() -> AsyncIterator[PgQueuer]:
    """The factory ``pgq run`` enters: one connection, one entrypoint."""
    connection = await asyncpg.connect(servers.postgres_url(NAME))
    pgq = PgQueuer(AsyncpgDriver(connection))

    @pgq.entrypoint("noop")
    async def noop(job: Job) -> None:
        """The no-op job."""
        jobtimes.noop()

    try:
        yield pgq
    finally:
        await connection.close()


class Adapter(adapter.PostgresPeer):
    """pgqueuer, one worker."""

    name = NAME
    package = "pgqueuer"
    bulk_method = 'await queries.enqueue(["noop", ...], [None, ...], [0, ...])'
    settings: ClassVar[dict[str, Any]] = {
        "worker": "pgq run peer_pgqueuer:main",
        "batch_size": "10 (default)",
        "max_concurrent_tasks": "unlimited (default)",
        "dequeue_timeout_s": 30.0,
        "dequeue": "LISTEN/NOTIFY, 30 s timeout",
        "logging": "INFO (default)",
        "driver": "asyncpg, one connection",
        "database": servers.postgres_database(NAME),
        "task": "async def",
        "enqueue": 'await queries.enqueue("noop", None)',
        "bulk": bulk_method,
    }

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._connection: asyncpg.Connection | None = None
        self._queries: Queries | None = None

    def install(self) -> None:
        async def go() -> None:
            connection = await asyncpg.connect(servers.postgres_url(NAME))
            try:
                await Queries(AsyncpgDriver(connection)).install()
            finally:
                await connection.close()

        self._client.run(go())

    def open(self) -> None:
        if self._connection is not None:
            return

        async def go() -> None:
            self._connection = await asyncpg.connect(servers.postgres_url(NAME))
            self._queries = Queries(AsyncpgDriver(self._connection))

        self._client.run(go())

    def close(self) -> None:
        if self._connection is not None:
            self._client.run(self._connection.close())
            self._connection = None
            self._queries = None
        self._client.shutdown()

    def _q(self) -> Queries:
        assert self._queries is not None, "open() first"
        return self._queries

    def enqueue(self, n: int) -> None:
        async def go() -> None:
            queries = self._q()
            for _ in range(n):
                await queries.enqueue("noop", None)

        self._client.run(go())

    def enqueue_bulk(self, n: int, batch: int) -> None:
        async def go() -> None:
            queries = self._q()
            for done in range(0, n, batch):
                size = min(batch, n - done)
                await queries.enqueue(["noop"] * size, [None] * size, [0] * size)

        self._client.run(go())

    def enqueue_one(self) -> float:
        async def go() -> float:
            queries = self._q()
            started = time.time()
            await queries.enqueue("noop", None)
            return started

        return self._client.run(go())

    def worker_argv(self) -> list[str]:
        return [adapter.command("pgq"), "run", "peer_pgqueuer:main"]
