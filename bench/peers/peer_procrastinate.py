"""procrastinate on PostgreSQL, as its users start it: ``procrastinate --app=... worker``.

Settings (procrastinate's defaults): one asyncio process, ``concurrency`` 1, new jobs noticed
by LISTEN/NOTIFY (``listen_notify`` on) with a 5 s fetch polling interval as the fallback,
finished jobs kept in the table (``delete_jobs`` never), psycopg pool. Database
``bench_peers_procrastinate``; the schema is applied with ``schema_manager.apply_schema``.
Bulk enqueue: ``batch_defer_async`` (one INSERT for the batch). With one job at a time it
drains a few hundred jobs a second, so it runs at most 5,000 jobs.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import procrastinate

import adapter
import jobtimes
import servers

NAME = "procrastinate"

app = procrastinate.App(
    connector=procrastinate.PsycopgConnector(conninfo=servers.postgres_url(NAME))
)


@app.task(name="noop")
async def noop() -> None:
    """The no-op job."""
    jobtimes.noop()


class Adapter(adapter.PostgresPeer):
    """procrastinate 3, one worker."""

    name = NAME
    package = "procrastinate"
    max_jobs = 5_000
    bulk_method = "await noop.batch_defer_async({}, {}, ...)"
    settings: ClassVar[dict[str, Any]] = {
        "worker": "procrastinate --app=peer_procrastinate.app worker",
        "concurrency": "1 (default)",
        "listen_notify": True,
        "fetch_job_polling_interval_s": 5.0,
        "delete_jobs": "never (default)",
        "dequeue": "LISTEN/NOTIFY, 5 s polling fallback",
        "logging": "INFO (default)",
        "database": servers.postgres_database(NAME),
        "task": "async def",
        "enqueue": "await noop.defer_async()",
        "bulk": bulk_method,
    }

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._open = False

    def install(self) -> None:
        async def go() -> None:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        self._client.run(go())

    def open(self) -> None:
        if self._open:
            return

        async def go() -> None:
            await app.open_async()

        self._client.run(go())
        self._open = True

    def close(self) -> None:
        if self._open:
            self._client.run(app.close_async())
            self._open = False
        self._client.shutdown()

    def enqueue(self, n: int) -> None:
        async def go() -> None:
            for _ in range(n):
                await noop.defer_async()

        self._client.run(go())

    def enqueue_bulk(self, n: int, batch: int) -> None:
        async def go() -> None:
            for done in range(0, n, batch):
                size = min(batch, n - done)
                await noop.batch_defer_async(*({} for _ in range(size)))

        self._client.run(go())

    def enqueue_one(self) -> float:
        async def go() -> float:
            started = time.time()
            await noop.defer_async()
            return started

        return self._client.run(go())

    def worker_argv(self) -> list[str]:
        return [adapter.command("procrastinate"), "--app=peer_procrastinate.app", "worker"]
