"""``jobdeck purge``: the real command on a SQLite file and on PostgreSQL.

It deletes the finished jobs older than the retention (``--older-than`` or
``JOBDECK_RETENTION_SECONDS``, a week by default) in batches, prints how many went and exits 0;
active jobs stay however old. Bad values exit 2 with a one-line message and delete nothing.
Jobs are made old by moving their timestamps back in the database, never by waiting.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable

import pytest

from backends import Database
from db_direct import backdate
from jobdeck.model import MICROS, Job, JobSpec, Outcome, OutcomeKind, Status, now_us
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.base import Store, WorkerBatch

from .processes import Launcher

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DAY = 86_400 * MICROS
SpecFactory = Callable[..., JobSpec]


@pytest.fixture
async def store(fresh_database: Database) -> AsyncIterator[Store]:
    """The test's own connection to the database, to make jobs and read them back."""
    opened = open_store(fresh_database.configure(Settings()))
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


class Jobs:
    """Makes jobs in given states, some of them days old, through the store and the database."""

    def __init__(self, store: Store, database: Database, make_spec: SpecFactory) -> None:
        self.store = store
        self.database = database
        self.make_spec = make_spec

    async def age(self, jobs: list[Job], days: float, *columns: str) -> None:
        at = now_us() - int(days * DAY)
        ids = [job.id for job in jobs]
        assert await asyncio.to_thread(backdate, self.database, ids, at, *columns) == len(jobs)

    async def finished(self, n: int, days_ago: float) -> list[Job]:
        """``n`` jobs that succeeded ``days_ago`` days ago."""
        specs = [self.make_spec(queue="done") for _ in range(n)]
        await self.store.enqueue(specs)
        claimed = await self.store.claim("w-test", ["done"], ["steps"], n, 30)
        assert len(claimed) == n
        outcomes = [
            Outcome(job.id, "w-test", OutcomeKind.SUCCEEDED, {"ok": True}, None, None, now_us())
            for job in claimed
        ]
        await self.store.record(WorkerBatch("w-test", outcomes=outcomes), 100)
        if days_ago:
            await self.age(claimed, days_ago, "finished_at")
        return claimed

    async def active(self, days_ago: float) -> list[Job]:
        """A queued and a running job, created (and runnable) ``days_ago`` days ago."""
        queued, running = self.make_spec(queue="waiting"), self.make_spec(queue="busy")
        await self.store.enqueue([queued, running])
        [claimed] = await self.store.claim("w-test", ["busy"], ["steps"], 1, 3600)
        jobs = [await self.get(queued.id), claimed]
        await self.age(jobs, days_ago, "created_at", "run_at", "updated_at")
        return jobs

    async def get(self, job_id: str) -> Job:
        job = await self.store.get(job_id)
        assert job is not None, f"job {job_id} is gone"
        return job

    async def gone(self, jobs: list[Job]) -> list[str]:
        """Which of ``jobs`` no longer exist."""
        return [job.id for job in jobs if await self.store.get(job.id) is None]


@pytest.fixture
def jobs(store: Store, fresh_database: Database, make_spec: SpecFactory) -> Jobs:
    return Jobs(store, fresh_database, make_spec)


async def purge(cluster: Launcher, *args: str, env: dict[str, str] | None = None) -> int:
    """Run ``jobdeck purge <args>``, which must succeed; return how many jobs it says went."""
    done = await asyncio.to_thread(cluster.run, "purge", *args, env=env)
    assert done.returncode == 0, done.stderr
    match = re.fullmatch(r"purged (\d+) jobs finished over \S+ seconds ago\n", done.stdout)
    assert match is not None, done.stdout
    assert "Traceback" not in done.stderr
    return int(match.group(1))


async def test_purge_deletes_finished_jobs_older_than_the_retention(
    cluster: Launcher, jobs: Jobs
) -> None:
    """By default a week: jobs finished 8 days ago go, 6 days ago stay; ``--older-than``
    and ``JOBDECK_RETENTION_SECONDS`` change the age; ``--older-than 0`` takes every
    finished job; queued and running jobs created a year ago stay throughout."""
    old = await jobs.finished(3, days_ago=8)
    last_week = await jobs.finished(2, days_ago=6)
    today = await jobs.finished(1, days_ago=0)
    active = await jobs.active(days_ago=365)

    assert await purge(cluster) == 3
    assert await jobs.gone(old + last_week + today + active) == [j.id for j in old]
    assert await purge(cluster) == 0

    assert await purge(cluster, env={"JOBDECK_RETENTION_SECONDS": "1e18"}) == 0
    assert await purge(cluster, env={"JOBDECK_RETENTION_SECONDS": str(5 * 86_400)}) == 2
    assert await jobs.gone(today + active) == []
    assert await purge(cluster, "--older-than", "0") == 1
    assert await jobs.gone(today) == [today[0].id]

    survivors = [await jobs.get(job.id) for job in active]
    assert [job.status for job in survivors] == [Status.QUEUED, Status.RUNNING]


async def test_purge_goes_in_batches_until_nothing_old_is_left(
    cluster: Launcher, jobs: Jobs
) -> None:
    """With ``--batch-size 3``, 8 old jobs go in three transactions, all of them counted;
    ``--older-than`` wins over ``JOBDECK_RETENTION_SECONDS``."""
    old = await jobs.finished(8, days_ago=2)
    kept = await jobs.finished(1, days_ago=0.5)

    env = {"JOBDECK_RETENTION_SECONDS": "0"}
    assert await purge(cluster, "--older-than", "86400", "--batch-size", "3", env=env) == 8
    assert await jobs.gone(old + kept) == [j.id for j in old]


BAD: list[tuple[list[str], dict[str, str], str]] = [
    (["--older-than", "-1"], {}, "--older-than"),
    (["--older-than", "a week"], {}, "--older-than"),
    (["--older-than", "nan"], {}, "--older-than"),
    (["--older-than", "inf"], {}, "--older-than"),
    (["--older-than"], {}, "--older-than"),
    (["--batch-size", "0"], {}, "--batch-size"),
    (["--batch-size", "2.5"], {}, "--batch-size"),
    (["--everything"], {}, "--everything"),
    ([], {"JOBDECK_RETENTION_SECONDS": "-1"}, "JOBDECK_RETENTION_SECONDS"),
    ([], {"JOBDECK_RETENTION_SECONDS": "a week"}, "JOBDECK_RETENTION_SECONDS"),
    ([], {"JOBDECK_RETENTION_SECONDS": "inf"}, "JOBDECK_RETENTION_SECONDS"),
]


async def test_bad_values_exit_2_with_a_message_and_delete_nothing(
    cluster: Launcher, jobs: Jobs
) -> None:
    """Each bad option or setting exits 2, names what is wrong in a line of stderr (no
    traceback), prints nothing on stdout and leaves every job alone."""
    old = await jobs.finished(2, days_ago=30)

    for args, env, named in BAD:
        done = await asyncio.to_thread(cluster.run, "purge", *args, env=env)
        case = f"purge {args} {env}"
        assert done.returncode == 2, (case, done.stdout, done.stderr)
        assert named in done.stderr, (case, done.stderr)
        assert "Traceback" not in done.stderr, (case, done.stderr)
        assert done.stdout == "", case
    assert await jobs.gone(old) == []
