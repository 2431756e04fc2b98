"""The interface every peer's module offers the driver (``run.py``).

A peer module ``peer_<name>.py`` defines the peer's app and its no-op job (which calls
:func:`jobtimes.noop`), imported both by the peer's own worker command and by the driver, and
a class ``Adapter`` built on :class:`RedisPeer` or :class:`PostgresPeer`. The class says how
the peer's users enqueue one job and many jobs, and which worker command they start.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import servers

T = TypeVar("T")


def command(name: str) -> str:
    """The console script ``name`` installed next to the running interpreter."""
    return str(Path(sys.executable).with_name(name))


class PeerAdapter:
    """One peer, seen by the driver. Subclasses fill in the class attributes and methods."""

    #: Key of the peer in the results.
    name: ClassVar[str]
    #: ``redis`` or ``postgres``.
    backend: ClassVar[str]
    #: The distribution whose version is reported.
    package: ClassVar[str]
    #: How the worker is run and how jobs are enqueued, as reported in the results.
    settings: ClassVar[dict[str, Any]]
    #: At most this many jobs for this peer (a slow one), whatever ``--jobs`` says.
    max_jobs: ClassVar[int | None] = None
    #: The period of a worker that looks for jobs on a fixed clock (0: it is woken or blocks).
    #: The pickup pause gets a random share of it, so that samples do not lock onto its phase.
    poll_seconds: ClassVar[float] = 0.0
    #: The call used by :meth:`enqueue_bulk`, or ``None`` where the peer has no bulk enqueue.
    bulk_method: ClassVar[str | None] = None

    def open(self) -> None:
        """Connect the enqueueing client, unless it is connected (:meth:`reset` calls it)."""

    def close(self) -> None:
        """Disconnect the enqueueing client."""

    def reset(self) -> None:
        """Empty the peer's part of its backend, install what its jobs need, open the client."""
        raise NotImplementedError

    def cleanup(self) -> None:
        """Remove the peer's part of its backend at the end of the run."""
        raise NotImplementedError

    def enqueue(self, n: int) -> None:
        """Enqueue ``n`` no-op jobs, one call of the peer's API per job."""
        raise NotImplementedError

    def enqueue_bulk(self, n: int, batch: int) -> None:
        """Enqueue ``n`` no-op jobs with the peer's bulk call, ``batch`` jobs per call."""
        raise NotImplementedError

    def enqueue_one(self) -> float:
        """Enqueue one no-op job; return ``time.time()`` taken just before the peer's call."""
        raise NotImplementedError

    def worker_argv(self) -> list[str]:
        """The command that starts one worker with its usual settings."""
        raise NotImplementedError


class AsyncClient:
    """For peers whose enqueueing API is async: an event loop from open to close."""

    def __init__(self) -> None:
        self._runner: asyncio.Runner | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the client's loop (started on first use)."""
        if self._runner is None:
            self._runner = asyncio.Runner()
        return self._runner.run(coro)

    def shutdown(self) -> None:
        """Close the loop; the next :meth:`run` starts another."""
        if self._runner is not None:
            self._runner.close()
            self._runner = None


class RedisPeer(PeerAdapter):
    """A peer on Redis, owning database number ``redis_db``."""

    backend = "redis"
    redis_db: ClassVar[int]

    def reset(self) -> None:
        servers.flush_redis(self.redis_db)
        self.open()

    def cleanup(self) -> None:
        servers.flush_redis(self.redis_db)


class PostgresPeer(PeerAdapter):
    """A peer on PostgreSQL, owning the database ``bench_peers_<name>``."""

    backend = "postgres"

    def reset(self) -> None:
        self.close()
        servers.recreate_postgres(self.name)
        self.install()
        self.open()

    def cleanup(self) -> None:
        self.close()
        servers.drop_postgres(self.name)

    def install(self) -> None:
        """Create the peer's tables in its fresh database, the way its docs say."""
        raise NotImplementedError
