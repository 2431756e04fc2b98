"""RQ on Redis, as its users start it: ``rq worker --url ... default``.

Settings (RQ's defaults): one worker process that forks a work horse for every job (the
``Worker`` class), result kept 500 s, logging at INFO (one line per job, to
the log file). Redis database 11. Bulk enqueue: ``Queue.enqueue_many`` with
``Queue.prepare_data``, which sends a batch in one Redis pipeline. RQ drains at a few dozen
jobs a second (a fork per job), so it runs at most 2,000 jobs.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from redis import Redis
from rq import Queue

import adapter
import jobtimes
import servers

REDIS_DB = 11


def noop() -> None:
    """The no-op job."""
    jobtimes.noop()


class Adapter(adapter.RedisPeer):
    """RQ, one forking worker."""

    name = "rq"
    package = "rq"
    redis_db = REDIS_DB
    max_jobs = 2_000
    bulk_method = "Queue.enqueue_many([Queue.prepare_data(noop), ...])"
    settings: ClassVar[dict[str, Any]] = {
        "worker": "rq worker --url redis://.../11 default",
        "worker_class": "rq.Worker (forks a work horse per job)",
        "concurrency": 1,
        "result_ttl_s": 500,
        "dequeue": "blocking BLPOP",
        "logging": "INFO (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "def (sync)",
        "enqueue": "queue.enqueue(noop)",
        "bulk": bulk_method,
    }

    def __init__(self) -> None:
        self._redis = Redis.from_url(servers.redis_url(REDIS_DB))
        self._queue = Queue("default", connection=self._redis)

    def close(self) -> None:
        self._redis.close()

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            self._queue.enqueue(noop)

    def enqueue_bulk(self, n: int, batch: int) -> None:
        for done in range(0, n, batch):
            size = min(batch, n - done)
            self._queue.enqueue_many([Queue.prepare_data(noop) for _ in range(size)])

    def enqueue_one(self) -> float:
        started = time.time()
        self._queue.enqueue(noop)
        return started

    def worker_argv(self) -> list[str]:
        return [adapter.command("rq"), "worker", "--url", servers.redis_url(REDIS_DB), "default"]
