"""PostgreSQL only: every connection of a store names itself in ``pg_stat_activity``.

``jobdeck:pool:<pid>`` for the pool, ``jobdeck:listen:<pid>`` for the LISTEN connection, so
that an operator (or a fault test) can tell which process holds which backend; an
``application_name`` given in the URL wins.
"""

from __future__ import annotations

import asyncio
import os

import psycopg
import pytest

from backends import Database
from jobdeck.settings import Settings
from jobdeck.store import open_store

pytestmark = pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)

SETTINGS = Settings(lease_seconds=0.5, poll_seconds=0.01, cancel_check_seconds=0.05)


async def application_names(admin: psycopg.AsyncConnection, expected: set[str]) -> set[str]:
    """The application names of this database's backends among ``expected``, once all of
    them are there (the LISTEN connection opens in the background); fail after 10 s."""
    async with asyncio.timeout(10):
        while True:
            cur = await admin.execute(
                "SELECT DISTINCT application_name FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = ANY(%s)",
                (sorted(expected),),
            )
            found = {name for (name,) in await cur.fetchall()}
            if found == expected:
                return found
            await asyncio.sleep(0.02)


async def test_connections_are_named_after_their_purpose_and_process(
    fresh_database: Database,
) -> None:
    """The pool's and the listener's backends carry ``jobdeck:pool:<pid>`` and
    ``jobdeck:listen:<pid>``."""
    store = open_store(fresh_database.configure(SETTINGS))
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(
            fresh_database.database_url, autocommit=True
        ) as admin:
            pid = os.getpid()
            expected = {f"jobdeck:pool:{pid}", f"jobdeck:listen:{pid}"}
            assert await application_names(admin, expected) == expected
    finally:
        await store.close()


async def test_an_application_name_in_the_url_wins(fresh_database: Database) -> None:
    """``?application_name=`` in ``JOBDECK_DATABASE_URL`` names every connection."""
    separator = "&" if "?" in fresh_database.database_url else "?"
    url = f"{fresh_database.database_url}{separator}application_name=billing-jobs"
    settings = SETTINGS.with_(database_url=url, pg_schema=fresh_database.pg_schema)
    store = open_store(settings)
    await store.open()
    try:
        async with await psycopg.AsyncConnection.connect(
            fresh_database.database_url, autocommit=True
        ) as admin:
            assert await application_names(admin, {"billing-jobs"}) == {"billing-jobs"}
            cur = await admin.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
                (f"jobdeck:%:{os.getpid()}",),
            )
            row = await cur.fetchone()
            assert row == (0,)
    finally:
        await store.close()
