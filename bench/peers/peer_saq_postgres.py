"""SAQ on PostgreSQL, as its users start it: ``saq peer_saq_postgres.settings``.

Settings (SAQ's defaults): one asyncio process (``--workers 1``), ``concurrency`` 10, dequeue
woken by LISTEN/NOTIFY (``poll_interval`` 0), a psycopg pool of 4 to 20 connections, job
results kept 600 s, logging at WARNING. Database ``bench_peers_saq_postgres``; SAQ creates its
tables when the queue connects. SAQ has no bulk enqueue; ``queue.enqueue("noop")`` is measured.
It drains a few hundred jobs a second here, so it runs at most 10,000 jobs. The job and the
client are in ``saq_peer.py``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import adapter
import saq_peer
import servers

NAME = "saq_postgres"

settings = saq_peer.worker_settings(servers.postgres_url(NAME))


class Adapter(saq_peer.SaqPeer, adapter.PostgresPeer):
    """SAQ, PostgreSQL queue, one asyncio worker."""

    name = NAME
    max_jobs = 10_000
    queue_url = servers.postgres_url(NAME)
    settings: ClassVar[dict[str, Any]] = {
        "worker": "saq peer_saq_postgres.settings",
        **saq_peer.SETTINGS,
        "dequeue": "LISTEN/NOTIFY (poll_interval 0, default)",
        "pool": "psycopg, 4-20 connections (default)",
        "database": servers.postgres_database(NAME),
    }

    def install(self) -> None:
        """SAQ creates its tables on connect: :meth:`open` does it."""
