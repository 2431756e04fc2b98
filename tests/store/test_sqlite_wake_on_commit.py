"""SQLite only: an enqueue's commit wakes idle workers before its caller resumes.

In ``jobdeck serve`` the API and the embedded worker share one event loop. Were the hub
told only when the enqueue returns, the handler would answer its client first and the
worker would claim after; the commit hook on the write request wakes the worker first.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from jobdeck.aio import wait_any
from jobdeck.model import JobSpec, new_job_id
from jobdeck.settings import Settings
from jobdeck.store.sqlite import SQLiteStore


async def test_enqueue_wakes_a_waiting_worker_before_the_caller_resumes(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "wake.db"), Settings())
    await store.open()
    try:
        order: list[str] = []

        async def idle_worker() -> None:
            await wait_any(store.hub.work_available, timeout=5)
            order.append("worker woke")

        store.hub.work_available.clear()
        waiting = asyncio.create_task(idle_worker())
        await asyncio.sleep(0)  # the worker is waiting now
        await store.enqueue([JobSpec(kind="steps", params={}, id=new_job_id())])
        order.append("caller resumed")
        await waiting

        assert order == ["worker woke", "caller resumed"]
    finally:
        await store.close()
