"""Persistence: the Store port and its adapters, chosen by ``JOBDECK_DATABASE_URL``."""

from __future__ import annotations

from jobdeck.settings import Settings
from jobdeck.store.base import Store


def sqlite_path(url: str) -> str:
    """The file of a ``sqlite:///relative`` or ``sqlite:////absolute`` URL."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise ValueError(f"not a SQLite URL: {url!r} (use sqlite:///path/to/file.db)")
    return url[len(prefix) :]


def open_store(settings: Settings) -> Store:
    """The adapter for ``settings.database_url`` (not opened yet)."""
    url = settings.database_url
    if url.startswith("sqlite:"):
        from jobdeck.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url), settings)
    if url.startswith(("postgresql:", "postgres:")):
        from jobdeck.store.postgres import PostgresStore

        return PostgresStore(url, settings)
    raise ValueError(f"unsupported JOBDECK_DATABASE_URL scheme: {url!r}")


__all__ = ["Store", "open_store", "sqlite_path"]
