"""Stores as one worker sees them, for the worker tests: the real store behind, with some
operations cut off, counted or slowed (``make_worker(deck, store=...)``).

A :class:`StoreView` passes every operation through to the store; a subclass overrides the
operations it changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobdeck.errors import StoreUnavailable
from jobdeck.model import Job, now_us
from jobdeck.store.base import Heartbeat, Store


class StoreView:
    """The store as one worker sees it: every operation passed through."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class ClaimsOnly(StoreView):
    """Every claim of the worker goes through :meth:`claim` (none is parked with the store),
    for the views that change or watch claims."""

    def park_claim(self, *args: Any, **kwargs: Any) -> None:
        return None


class Partition(ClaimsOnly):
    """While ``cut``, that worker's heartbeats, rescues and cancel checks fail as if the
    database could not be reached, and its claims find nothing (quietly, to keep the log of a
    failing test readable).

    Records the start time of the last heartbeat that went through: the lease it granted
    ends no earlier than that plus the lease length.
    """

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.cut = False
        self.last_renewal_start: int | None = None

    def _check(self) -> None:
        if self.cut:
            raise StoreUnavailable("network partition (test)")

    async def heartbeat(self, worker: str, job_ids: Sequence[str], lease: float) -> Heartbeat:
        self._check()
        started = now_us()
        beat = await self._store.heartbeat(worker, job_ids, lease)
        if beat.renewed:
            self.last_renewal_start = started
        return beat

    async def claim(self, *args: Any, **kwargs: Any) -> list[Job]:
        if self.cut:
            return []
        return await self._store.claim(*args, **kwargs)

    async def rescue_expired(self) -> list[Job]:
        self._check()
        return await self._store.rescue_expired()

    async def cancel_requests(self, worker: str, job_ids: Sequence[str]) -> frozenset[str]:
        self._check()
        return await self._store.cancel_requests(worker, job_ids)


class Faulty(StoreView):
    """Operations named in ``failing`` raise ``RuntimeError`` (a bug, not an outage) the
    next ``times`` calls each, then pass through again."""

    def __init__(self, store: Store, *failing: str, times: int = 1) -> None:
        super().__init__(store)
        self.failures_left = dict.fromkeys(failing, times)

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._store, name)
        if name not in self.failures_left:
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.failures_left[name] > 0:
                self.failures_left[name] -= 1
                raise RuntimeError(f"{name} broke (test)")
            return await target(*args, **kwargs)

        return call
