"""PostgreSQL only: statements a pool connection runs often are prepared on the server,
unless ``JOBDECK_PG_PREPARE`` is off (PgBouncer before 1.21 in transaction mode)."""

from __future__ import annotations

from typing import Any

import pytest

from backends import Database
from jobdeck.settings import Settings
from jobdeck.store import open_store
from jobdeck.store.postgres import PREPARE_AFTER, PostgresStore


async def prepared_after_repeats(store: PostgresStore) -> int:
    """Statements prepared on one pool connection after it ran a job lookup often."""

    async def run(conn: Any) -> int:
        for _ in range(PREPARE_AFTER + 1):
            await conn.execute(store._sql["select_job"], ("no-such-job",))
        cur = await conn.execute("SELECT count(*) AS n FROM pg_prepared_statements")
        row = await cur.fetchone()
        return row["n"]

    return await store._read(run)


@pytest.mark.parametrize("fresh_database", ["postgres"], indirect=True)
@pytest.mark.parametrize(("prepare", "prepared"), [(True, True), (False, False)])
async def test_statements_run_often_are_prepared_unless_turned_off(
    fresh_database: Database, prepare: bool, prepared: bool
) -> None:
    store = open_store(fresh_database.configure(Settings(pg_prepare=prepare)))
    assert isinstance(store, PostgresStore)
    await store.open()
    try:
        assert (await prepared_after_repeats(store) > 0) is prepared
        # Both ways, the store works the same.
        assert await store.get("no-such-job") is None
    finally:
        await store.close()


def test_the_setting_reads_from_the_environment() -> None:
    assert Settings.from_env({"JOBDECK_PG_PREPARE": "off"}).pg_prepare is False
    assert Settings.from_env({}).pg_prepare is True


def test_every_statement_is_short_enough_to_be_parsed_once() -> None:
    """psycopg keeps the parse of a statement of up to 4,096 characters (its
    ``MAX_CACHED_STATEMENT_LENGTH``); a longer one is parsed again at every execution."""
    store = PostgresStore(Settings(database_url="postgresql://127.0.0.1/not-opened"))
    lengths = {name: len(text) for name, text in store._sql.items()}
    assert max(lengths.values()) <= 4096, lengths
