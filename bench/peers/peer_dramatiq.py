"""dramatiq on Redis, as its users start it: ``dramatiq peer_dramatiq``.

Settings (dramatiq's defaults): one ``dramatiq`` command that forks one worker process per CPU
(2 here) with 8 worker threads each, the default middleware (no result backend), Redis
database 15. dramatiq has no bulk enqueue (a ``group`` sends one message per job);
``noop.send()`` is measured.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

import dramatiq
from dramatiq.brokers.redis import RedisBroker

import adapter
import jobtimes
import servers

REDIS_DB = 15

broker = RedisBroker(url=servers.redis_url(REDIS_DB))
dramatiq.set_broker(broker)


@dramatiq.actor
def noop() -> None:
    """The no-op job."""
    jobtimes.noop()


class Adapter(adapter.RedisPeer):
    """dramatiq, Redis broker."""

    name = "dramatiq"
    package = "dramatiq"
    redis_db = REDIS_DB
    settings: ClassVar[dict[str, Any]] = {
        "worker": "dramatiq peer_dramatiq",
        "processes": "2 (default: number of CPUs)",
        "threads": "8 per process (default)",
        "result_backend": None,
        "dequeue": "polls Redis (Lua fetch), backoff from 5 ms doubling to 1 s while idle",
        "logging": "INFO (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "def (sync)",
        "enqueue": "noop.send()",
        "bulk": "none",
    }

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            noop.send()

    def enqueue_one(self) -> float:
        started = time.time()
        noop.send()
        return started

    def worker_argv(self) -> list[str]:
        return [adapter.command("dramatiq"), "peer_dramatiq"]
