"""Fixtures of the fault tests: real ``jobdeck`` processes on a fresh database of each backend.

``jobdeck`` and the failure report come from the end-to-end tests (one definition for both).
``cluster`` is that :class:`~e2e.processes.Launcher`, pointed at ``fresh_database`` (a SQLite
file, or a PostgreSQL schema of its own); ``db`` reads the jobs table of the same database
directly. Processes are stopped before the database is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends import Database
from e2e.conftest import jobdeck, pytest_runtest_makereport
from e2e.database import DatabaseReader
from e2e.processes import Launcher

__all__ = ["cluster", "db", "jobdeck", "pytest_runtest_makereport"]


@pytest.fixture
def cluster(fresh_database: Database, jobdeck: Launcher) -> Launcher:
    """A launcher whose processes all use ``fresh_database``."""
    jobdeck.settings["JOBDECK_DATABASE_URL"] = fresh_database.database_url
    if fresh_database.pg_schema is not None:
        jobdeck.settings["JOBDECK_PG_SCHEMA"] = fresh_database.pg_schema
    return jobdeck


@pytest.fixture
def db(fresh_database: Database) -> Iterator[DatabaseReader]:
    """The jobs table of ``fresh_database``, read directly."""
    reader = DatabaseReader(fresh_database)
    try:
        yield reader
    finally:
        reader.close()
