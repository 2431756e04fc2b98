"""PostgreSQL only: the store keeps everything in the schema ``JOBDECK_PG_SCHEMA``.

It creates that schema when it is missing and puts nothing anywhere else, so that several
jobdeck installations (and test runs) can share one database. This is about PostgreSQL's
schemas, which SQLite has no counterpart of; isolation of databases in general is in
``test_conformance_open.py``, for every backend.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from backends import SCHEMA_PREFIX, Database
from jobdeck.store.base import Store

pytestmark = pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)

StoreOn = Callable[[Database], AbstractAsyncContextManager[Store]]

#: Tables, views, sequences and functions outside the system schemas and this run's schemas.
OUTSIDE = r"""
SELECT n.nspname, c.relname, c.relkind::text FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%%' AND n.nspname NOT LIKE %(prefix)s
UNION ALL
SELECT n.nspname, p.proname, 'function' FROM pg_proc p
JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_%%' AND n.nspname NOT LIKE %(prefix)s
"""

TABLES_IN = """
SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %s AND c.relkind IN ('r', 'p')
"""


def objects_outside(conn: Any) -> set[tuple[str, str, str]]:
    """Every object outside the system schemas and the schemas tests make."""
    prefix = SCHEMA_PREFIX.replace("_", r"\_") + "%"
    return set(conn.execute(OUTSIDE, {"prefix": prefix}).fetchall())


async def test_the_store_creates_its_schema_and_keeps_to_it(
    database: Database, store_on: StoreOn
) -> None:
    """Opening a store on a missing schema creates it and its tables there, and nothing
    anywhere else in the database."""
    import psycopg

    schema = database.pg_schema
    assert schema is not None
    with psycopg.connect(database.database_url, autocommit=True) as conn:
        exists = "SELECT count(*) FROM pg_namespace WHERE nspname = %s"
        assert conn.execute(exists, (schema,)).fetchone() == (0,)
        before = objects_outside(conn)
        async with store_on(database):
            pass
        assert conn.execute(exists, (schema,)).fetchone() == (1,)
        assert conn.execute(TABLES_IN, (schema,)).fetchall() != []
        assert objects_outside(conn) - before == set()
