"""Fixtures of the fault tests: real ``jobdeck`` processes on a fresh database of each backend.

``jobdeck``, ``cluster`` and the failure report come from the end-to-end tests (one
definition for both): ``cluster`` is the :class:`~e2e.processes.Launcher` pointed at
``fresh_database`` (a SQLite file, or a PostgreSQL schema of its own); ``db`` reads the jobs
table of the same database directly. Processes are stopped before the database is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from backends import Database
from e2e.conftest import cluster, jobdeck, pytest_runtest_makereport
from e2e.database import DatabaseReader

__all__ = ["cluster", "db", "jobdeck", "pytest_runtest_makereport"]


@pytest.fixture
def db(fresh_database: Database) -> Iterator[DatabaseReader]:
    """The jobs table of ``fresh_database``, read directly."""
    reader = DatabaseReader(fresh_database)
    try:
        yield reader
    finally:
        reader.close()
