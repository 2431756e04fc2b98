"""arq on Redis, as its users start it: ``arq peer_arq.WorkerSettings``.

Settings (arq's defaults): one asyncio process, ``max_jobs`` 10 jobs at once, ``poll_delay``
0.5 s (an idle worker looks for jobs twice a second: arq does not block on Redis), results
kept 3,600 s, logging at INFO (two lines per job, to the log file). Redis database 12. arq has
no bulk enqueue; ``ArqRedis.enqueue_job("noop")`` is measured.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

import adapter
import jobtimes
import servers

REDIS_DB = 12
_HOST, _PORT = servers.redis_host_port()
REDIS_SETTINGS = RedisSettings(host=_HOST, port=_PORT, database=REDIS_DB)


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op job."""
    jobtimes.noop()


class WorkerSettings:
    """What ``arq`` reads: the functions and the Redis server, nothing else."""

    functions: ClassVar[list[Any]] = [noop]
    redis_settings = REDIS_SETTINGS


class Adapter(adapter.RedisPeer):
    """arq, one asyncio worker."""

    name = "arq"
    package = "arq"
    redis_db = REDIS_DB
    poll_seconds = 0.5
    settings: ClassVar[dict[str, Any]] = {
        "worker": "arq peer_arq.WorkerSettings",
        "concurrency": "max_jobs=10 (default)",
        "poll_delay_s": 0.5,
        "queue_read_limit": "100 per poll (default: max(5 * max_jobs, 100))",
        "dequeue": "polls Redis every 0.5 s",
        "keep_result_s": 3600,
        "logging": "INFO (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "async def",
        "enqueue": 'await pool.enqueue_job("noop")',
        "bulk": "none",
    }

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._pool: ArqRedis | None = None

    def open(self) -> None:
        if self._pool is not None:
            return
        self._pool = self._client.run(create_pool(REDIS_SETTINGS))

    def close(self) -> None:
        if self._pool is not None:
            self._client.run(self._pool.aclose())
            self._pool = None
        self._client.shutdown()

    def _redis(self) -> ArqRedis:
        assert self._pool is not None, "open() first"
        return self._pool

    def enqueue(self, n: int) -> None:
        async def go() -> None:
            pool = self._redis()
            for _ in range(n):
                await pool.enqueue_job("noop")

        self._client.run(go())

    def enqueue_one(self) -> float:
        async def go() -> float:
            pool = self._redis()
            started = time.time()
            await pool.enqueue_job("noop")
            return started

        return self._client.run(go())

    def worker_argv(self) -> list[str]:
        return [adapter.command("arq"), "peer_arq.WorkerSettings"]
