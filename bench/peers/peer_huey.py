"""huey on Redis, as its users start it: ``huey_consumer peer_huey.huey``.

Settings (huey's defaults): one consumer process with one worker thread (``-w 1 -k thread``)
and its scheduler thread, dequeue by a blocking Redis call (``blocking`` on, read timeout 1 s),
results stored (a no-op returns ``None``, which huey does not store), logging at INFO (to the
log file). Redis database 14. huey has no bulk enqueue (``task.map`` enqueues one by one);
calling the task, ``noop()``, is measured.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from huey import RedisHuey

import adapter
import jobtimes
import servers

REDIS_DB = 14
_HOST, _PORT = servers.redis_host_port()

huey = RedisHuey("bench", host=_HOST, port=_PORT, db=REDIS_DB)


@huey.task()
def noop() -> None:
    """The no-op job."""
    jobtimes.noop()


class Adapter(adapter.RedisPeer):
    """huey, one consumer with one worker thread."""

    name = "huey"
    package = "huey"
    redis_db = REDIS_DB
    settings: ClassVar[dict[str, Any]] = {
        "worker": "huey_consumer peer_huey.huey",
        "workers": "1 (default)",
        "worker_type": "thread (default)",
        "dequeue": "blocking BRPOP, 1 s read timeout",
        "logging": "INFO (default)",
        "broker": f"redis db {REDIS_DB}",
        "task": "def (sync)",
        "enqueue": "noop()",
        "bulk": "none",
    }

    def enqueue(self, n: int) -> None:
        for _ in range(n):
            noop()

    def enqueue_one(self) -> float:
        started = time.time()
        noop()
        return started

    def worker_argv(self) -> list[str]:
        return [adapter.command("huey_consumer"), "peer_huey.huey"]
