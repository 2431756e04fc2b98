"""SQLite only: the plans of statements that run while a table may hold millions of jobs.

SQLite keeps no statistics here, so its plans do not depend on the table's size: a plan
read on an empty table is the plan of a large one.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from jobdeck.model import MICROS
from jobdeck.settings import Settings
from jobdeck.store.sqlite import Q, SQLiteStore


async def query_plan(path: Path, statement: str, args: tuple[object, ...]) -> list[str]:
    """What ``EXPLAIN QUERY PLAN`` says of ``statement`` on a migrated database."""
    store = SQLiteStore(str(path), Settings())
    await store.open()
    await store.close()
    with sqlite3.connect(path) as conn:
        return [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {statement}", args)]


async def test_purge_reads_the_finished_index_without_sorting(tmp_path: Path) -> None:
    """The purge finds its oldest finished jobs through jobs_finished: not through the
    status index, which holds every terminal job and would have to be sorted (a 200 ms
    stall of every write per million jobs, at every purge)."""
    cutoff = int(time.time() * MICROS) - 86_400 * MICROS
    plan = await query_plan(tmp_path / "plan.db", Q["purge"], (cutoff, 500))
    assert any("jobs_finished" in step for step in plan), plan
    assert not any("jobs_status_created" in step for step in plan), plan
    assert not any("TEMP B-TREE" in step for step in plan), plan
