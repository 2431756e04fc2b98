"""Retention: forgetting finished jobs older than ``JOBDECK_RETENTION_SECONDS``.

Workers purge on their own, one small batch at a time (:func:`purge_interval` says how
often); ``jobdeck purge`` does the same at once (:func:`purge_finished`). Both go through
:meth:`Store.purge <jobdeck.store.base.Store.purge>`, which only ever deletes terminal jobs
(and their log lines).
"""

from __future__ import annotations

from jobdeck.model import MICROS
from jobdeck.store.base import Store

#: Jobs deleted per statement: short transactions, short locks.
PURGE_BATCH = 500
#: A worker looks for old jobs at least this often; more often when the retention is short.
PURGE_EVERY_SECONDS = 60.0


def purge_cutoff(now: int, retention_seconds: float) -> int:
    """The ``finished_at`` (microseconds) before which finished jobs go, at time ``now``.

    Clamped to ``[0, now]``, so that it always fits a 64-bit integer column: a retention
    of 0 (or less) purges every finished job, one longer than the epoch (or not a number)
    purges nothing.
    """
    if not retention_seconds < now / MICROS:  # also NaN and infinity
        return 0
    return max(0, now - max(0, int(retention_seconds * MICROS)))


def purge_interval(retention_seconds: float) -> float:
    """Seconds between a worker's purges: every minute, or every half retention when that
    is shorter, so that no finished job outlives 1.5 × a short retention by much."""
    return max(0.0, min(PURGE_EVERY_SECONDS, retention_seconds / 2))


async def purge_finished(store: Store, finished_before: int, batch_size: int = PURGE_BATCH) -> int:
    """Delete every terminal job finished before ``finished_before``, ``batch_size`` per
    transaction; return how many went."""
    if batch_size < 1:
        raise ValueError("the batch size must be at least 1")
    total = 0
    while True:
        purged = await store.purge(finished_before, batch_size)
        total += purged
        if purged < batch_size:
            return total
