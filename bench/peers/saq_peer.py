"""What the two SAQ peers share: the no-op job, the worker settings and the enqueueing client.

``peer_saq_redis.py`` and ``peer_saq_postgres.py`` differ only by the broker SAQ's
``Queue.from_url`` is given (and what that broker's ``Adapter`` base resets); each module
defines ``settings = saq_peer.worker_settings(url)`` for its ``saq peer_saq_<broker>.settings``
command and an ``Adapter(saq_peer.SaqPeer, adapter.RedisPeer or adapter.PostgresPeer)``.
"""

from __future__ import annotations

import time
from typing import Any, ClassVar

from saq import Queue

import adapter
import jobtimes

#: The entries of a SAQ peer's reported settings that do not depend on its broker.
SETTINGS: dict[str, Any] = {
    "processes": "1 (--workers default)",
    "concurrency": "10 (default)",
    "result_ttl_s": 600,
    "logging": "WARNING (default)",
    "task": "async def",
    "enqueue": 'await queue.enqueue("noop")',
    "bulk": "none",
}


async def noop(ctx: dict[str, Any]) -> None:
    """The no-op job."""
    jobtimes.noop()


def worker_settings(url: str) -> dict[str, Any]:
    """The settings object ``saq <module>.settings`` starts a worker from: a queue at ``url``
    and the no-op job."""
    return {"queue": Queue.from_url(url), "functions": [noop]}


class SaqPeer(adapter.PeerAdapter):
    """SAQ's enqueueing client, on the queue at ``queue_url``; one asyncio worker started
    with ``saq peer_<name>.settings``. SAQ has no bulk enqueue."""

    package = "saq"
    #: The broker URL given to ``Queue.from_url``.
    queue_url: ClassVar[str]

    def __init__(self) -> None:
        self._client = adapter.AsyncClient()
        self._queue: Any = None

    def open(self) -> None:
        if self._queue is not None:
            return

        async def go() -> Any:
            queue = Queue.from_url(self.queue_url)
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
        return [adapter.command("saq"), f"peer_{self.name}.settings"]
