"""SAQ on Redis, as its users start it: ``saq peer_saq_redis.settings``.

Settings (SAQ's defaults): one asyncio process (``--workers 1``), ``concurrency`` 10, dequeue
by a blocking Redis call, job results kept 600 s, logging at WARNING. Redis database 13. SAQ
has no bulk enqueue (``Queue.map`` enqueues one by one and waits for the results);
``queue.enqueue("noop")`` is measured.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from saq import Queue

import adapter
import jobtimes
import servers

REDIS_DB = 13


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op job."""
    jobtimes.noop()


settings = {"queue": Queue.from_url(servers.redis_url(REDIS_DB)), "functions": [noop]}


class Adapter(adapter.RedisPeer):
    """SAQ, Redis queue, one asyncio worker."""

    name = "saq_redis"
    package = "saq"
    redis_db = REDIS_DB
    settings: ClassVar[dict[str, Any]] = {
        "worker": "saq peer_saq_redis.settings",
        "processes": "1 (--workers default)",
        "concurrency": "10 (default)",
        "result_ttl_s": 600,
        "dequeue": "blocking BLMOVE",
        "logging": "WARNING (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "async def",
        "enqueue": 'await queue.enqueue("noop")',
        "bulk": "none",
    }

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._queue: Any = None

    def open(self) -> None:
        if self._queue is not None:
            return

        async def go() -> Any:
            queue = Queue.from_url(servers.redis_url(REDIS_DB))
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
        return [adapter.command("saq"), "peer_saq_redis.settings"]
