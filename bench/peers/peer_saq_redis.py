"""SAQ on Redis, as its users start it: ``saq peer_saq_redis.settings``.

Settings (SAQ's defaults): one asyncio process (``--workers 1``), ``concurrency`` 10, dequeue
by a blocking Redis call, job results kept 600 s, logging at WARNING. Redis database 13. SAQ
has no bulk enqueue (``Queue.map`` enqueues one by one and waits for the results);
``queue.enqueue("noop")`` is measured. The job and the client are in ``saq_peer.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import adapter
import saq_peer
import servers

REDIS_DB = 13

settings = saq_peer.worker_settings(servers.redis_url(REDIS_DB))


class Adapter(saq_peer.SaqPeer, adapter.RedisPeer):
    """SAQ, Redis queue, one asyncio worker."""

    name = "saq_redis"
    redis_db = REDIS_DB
    queue_url = servers.redis_url(REDIS_DB)
    settings: ClassVar[dict[str, Any]] = {
        "worker": "saq peer_saq_redis.settings",
        **saq_peer.SETTINGS,
        "dequeue": "blocking BLMOVE",
        "broker": f"redis db {REDIS_DB}",
    }
