"""Celery on Redis, as its users start it: ``celery -A peer_celery worker``.

Settings (all Celery's defaults, nothing tuned): the prefork pool with concurrency = the number
of CPUs (2 here, so one main process and two child processes), ``worker_prefetch_multiplier``
4, acknowledgement before the job runs (``acks_late`` off), no result backend (Celery's
default: results are not stored), log level WARNING. Broker: Redis database 10. Celery has no
bulk enqueue: ``group(...).apply_async()`` still publishes one message per job, so only the
single enqueue (``noop.delay()``) is measured.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from celery import Celery

import adapter
import jobtimes
import servers

REDIS_DB = 10

app = Celery("peer_celery", broker=servers.redis_url(REDIS_DB))
app.conf.broker_connection_retry_on_startup = True


@app.task(name="noop")
def noop() -> None:
    """The no-op job."""
    jobtimes.noop()


class Adapter(adapter.RedisPeer):
    """Celery 5, Redis broker, prefork pool."""

    name = "celery"
    package = "celery"
    redis_db = REDIS_DB
    settings: ClassVar[dict[str, Any]] = {
        "worker": "celery -A peer_celery worker",
        "pool": "prefork",
        "concurrency": "2 child processes (default: number of CPUs)",
        "prefetch_multiplier": 4,
        "acks_late": False,
        "result_backend": None,
        "dequeue": "blocking BRPOP (kombu Redis transport)",
        "logging": "WARNING (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "def (sync)",
        "enqueue": "noop.delay()",
        "bulk": "none (group(...).apply_async() publishes one message per job)",
    }

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            noop.delay()

    def enqueue_one(self) -> float:
        started = time.time()
        noop.delay()
        return started

    def worker_argv(self) -> list[str]:
        return [adapter.command("celery"), "-A", "peer_celery", "worker"]
