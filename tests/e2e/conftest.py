"""Fixtures of the end-to-end tests: real ``jobdeck`` processes on a SQLite file in tmp_path.

``jobdeck`` is a :class:`~tests.e2e.processes.Launcher`: ``jobdeck.serve()``,
``jobdeck.worker()``, ``jobdeck.run("migrate")``. Every process it started is stopped after
the test (SIGTERM, then SIGKILL after a deadline), and when a test fails, its report shows
each process's command, exit status, stdout and the end of its stderr. ``cluster`` is the
same launcher pointed at ``fresh_database`` instead, each backend in turn.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from backends import Database

from .processes import Launcher, launcher

LAUNCHER_KEY = pytest.StashKey[Launcher]()


@pytest.fixture
def jobdeck(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Launcher]:
    """Start ``jobdeck`` commands on ``tmp_path/jobdeck.db``; all are stopped afterwards."""
    with launcher(tmp_path) as started:
        request.node.stash[LAUNCHER_KEY] = started
        yield started


@pytest.fixture
def cluster(fresh_database: Database, jobdeck: Launcher) -> Launcher:
    """``jobdeck``, its processes all on ``fresh_database`` (a SQLite file or a PostgreSQL
    schema of its own, dropped after the processes are stopped)."""
    jobdeck.settings["JOBDECK_DATABASE_URL"] = fresh_database.database_url
    if fresh_database.pg_schema is not None:
        jobdeck.settings["JOBDECK_PG_SCHEMA"] = fresh_database.pg_schema
    return jobdeck


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Add the output of the test's processes to the report of a failed test."""
    report = yield
    started = item.stash.get(LAUNCHER_KEY, None)
    if report.failed and started is not None:
        for title, text in started.report():
            report.sections.append((title, text))
    return report
