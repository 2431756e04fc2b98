"""Conformance: writes made at once by many callers of one store object.

An adapter may run writes that arrive together in one transaction (SQLite's group commit);
each caller must still get its own outcome: a failing write undoes only itself, and every
answered write is stored.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

from jobdeck.errors import JobIdTaken
from jobdeck.model import JobSpec
from jobdeck.store.base import Enqueued, Store

SpecFactory = Callable[..., JobSpec]
WRITERS = 60


async def test_a_failing_write_among_many_at_once_undoes_only_itself(
    store: Store, make_spec: SpecFactory
) -> None:
    """Sixty enqueues at once, every tenth a conflict: the conflicts raise JobIdTaken and
    change nothing, the other fifty-four are stored as answered."""
    taken = make_spec()
    [existing] = await store.enqueue([taken])
    specs = [
        replace(taken, priority=index) if index % 10 == 0 else make_spec()
        for index in range(1, WRITERS + 1)
    ]
    outcomes = await asyncio.gather(
        *(store.enqueue([spec]) for spec in specs), return_exceptions=True
    )
    for spec, outcome in zip(specs, outcomes, strict=True):
        if spec.id == taken.id:
            assert isinstance(outcome, JobIdTaken), outcome
            continue
        assert isinstance(outcome, list), outcome
        [entry] = outcome
        assert isinstance(entry, Enqueued)
        assert entry.created
        assert await store.get(spec.id) == entry.job
    assert await store.get(taken.id) == existing.job
