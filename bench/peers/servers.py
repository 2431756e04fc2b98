"""The local Redis and PostgreSQL servers the peers run against, and how a peer's part is reset.

Each Redis peer owns one database number of the server (``FLUSHDB`` touches only that one);
each PostgreSQL peer owns a database of its own, ``bench_peers_<name>``, dropped and created
again on reset (its tables, types and functions go with it; nothing else is touched).
``BENCH_PEERS_REDIS_URL`` and ``BENCH_PEERS_POSTGRES_URL`` name the servers; the PostgreSQL URL
names the database used to create and drop the peers' databases.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

REDIS_URL = os.environ.get("BENCH_PEERS_REDIS_URL", "redis://127.0.0.1:6379")
POSTGRES_URL = os.environ.get(
    "BENCH_PEERS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
DATABASE_PREFIX = "bench_peers_"


def redis_url(db: int) -> str:
    """The URL of database number ``db`` of the Redis server."""
    return f"{REDIS_URL.rstrip('/')}/{db}"


def redis_host_port() -> tuple[str, int]:
    """Host and port of the Redis server."""
    parts = urlsplit(REDIS_URL)
    return parts.hostname or "127.0.0.1", parts.port or 6379


def postgres_database(peer: str) -> str:
    """The name of the PostgreSQL database a peer owns."""
    return f"{DATABASE_PREFIX}{peer}"


def postgres_url(peer: str) -> str:
    """The URL of the PostgreSQL database a peer owns."""
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(path=f"/{postgres_database(peer)}"))


def flush_redis(db: int) -> None:
    """Empty database number ``db`` of the Redis server, and only it."""
    import redis

    client = redis.Redis.from_url(redis_url(db))
    try:
        client.flushdb()
    finally:
        client.close()


def drop_postgres(peer: str) -> None:
    """Drop the peer's PostgreSQL database (closing whatever is still connected to it)."""
    import psycopg
    from psycopg import sql

    name = sql.Identifier(postgres_database(peer))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))


def recreate_postgres(peer: str) -> None:
    """Drop the peer's PostgreSQL database and create it empty."""
    import psycopg
    from psycopg import sql

    drop_postgres(peer)
    name = sql.Identifier(postgres_database(peer))
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))


def server_versions() -> dict[str, str | None]:
    """The versions of the Redis and PostgreSQL servers (``None`` where one cannot be reached)."""
    versions: dict[str, str | None] = {"redis": None, "postgresql": None}
    try:
        import redis

        client = redis.Redis.from_url(redis_url(0), socket_connect_timeout=3)
        versions["redis"] = str(client.info("server")["redis_version"])
        client.close()
    except Exception:
        pass
    try:
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=3) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            versions["postgresql"] = row[0] if row else None
    except Exception:
        pass
    return versions
