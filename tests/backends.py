"""The store backends every store, worker and API test runs on, and fresh databases of each.

This is the one registry of backends (:data:`BACKENDS`). ``tests/conftest.py`` turns it into
the parametrised fixtures ``fresh_database`` (one database per test) and ``module_database``
(one per module); the conftest files of ``tests/store``, ``tests/worker`` and ``tests/api``
build their settings, stores and decks on those. It is a plain module (``pyproject.toml``
puts ``tests`` on ``pythonpath``) so that conftest files and test modules can import its
types; conftest files themselves are not importable.

- **sqlite**: a file in a temporary directory of the test (or module).
- **postgres**: a schema of its own, ``jobdeck_t_<8 hex>``, in the database named by
  ``JOBDECK_TEST_POSTGRES_URL`` (default :data:`DEFAULT_POSTGRES_URL`). The adapter creates
  the schema when it migrates; the fixture drops it (``DROP SCHEMA ... CASCADE``) afterwards.
  Whether the server answers is checked once per run (:func:`probe_postgres`): when it does
  not, PostgreSQL tests skip with the URL and the error as the reason, and under ``CI=true``
  the run fails instead.
"""

from __future__ import annotations

import importlib
import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from jobdeck.settings import Settings

if TYPE_CHECKING:
    import psycopg

#: Where PostgreSQL tests make their schemas.
POSTGRES_URL_ENV = "JOBDECK_TEST_POSTGRES_URL"
#: The local server of a developer machine or CI runner (trust authentication).
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: Seconds to wait for the server to answer the check at the start of the run.
CONNECT_TIMEOUT = 2
#: A teardown's ``DROP SCHEMA`` waits this long for locks: a store that was not closed
#: properly fails the test's teardown instead of hanging the run.
DROP_LOCK_TIMEOUT = "10s"
#: Prefix of the schemas the tests make (``jobdeck_t_<8 hex>``).
SCHEMA_PREFIX = "jobdeck_t_"

#: Capabilities a test may require with ``@pytest.mark.requires_capability("name")``. Each is
#: a boolean class attribute that every store adapter declares.
#:
#: ``push_notifications``: changes made through one store object reach another store object
#: on the same database at once (``hub.work_available``, ``hub.cancel_requested``), not only
#: by polling. PostgreSQL has it (LISTEN/NOTIFY); SQLite across connections does not.
CAPABILITIES = frozenset({"push_notifications"})


def in_ci() -> bool:
    """Whether this is a CI run (``CI=true``): a missing PostgreSQL then fails the run."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def postgres_url() -> str:
    """The server PostgreSQL tests use: ``JOBDECK_TEST_POSTGRES_URL`` or the local default."""
    return os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL


def redact(url: str) -> str:
    """``url`` with its password (if any) replaced by ``***``, fit for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def probe_postgres(url: str, timeout: int = CONNECT_TIMEOUT) -> str | None:
    """None when the server at ``url`` answers ``SELECT 1`` within ``timeout`` seconds;
    otherwise why not, in one line."""
    try:
        import psycopg
    except ImportError as exc:
        return f"psycopg is not installed ({exc}); pip install -e '.[test,postgres]'"
    try:
        with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        message = " ".join(str(exc).split()) or "no message"
        return f"{type(exc).__name__}: {message}"
    return None


@dataclass
class PostgresServer:
    """The PostgreSQL server of this run: whether it answers, and the schemas made on it."""

    url: str
    #: Why the server cannot be used (see :func:`probe_postgres`), or None.
    error: str | None
    #: Schemas handed out and not dropped yet.
    schemas: set[str] = field(default_factory=set)
    _admin: psycopg.Connection[Any] | None = None

    @property
    def problem(self) -> str:
        """What is wrong with the server, naming its URL and the error, and how to fix it."""
        return (
            f"PostgreSQL at {redact(self.url)} is not available ({self.error}); "
            f"start the server or set {POSTGRES_URL_ENV}"
        )

    @property
    def skip_reason(self) -> str:
        """Why PostgreSQL tests skip (outside CI)."""
        return f"{self.problem} (under CI=true this fails the run)"

    @property
    def ci_failure(self) -> str:
        """Why a CI run fails."""
        return f"CI=true and {self.problem}: PostgreSQL tests must run in CI"

    def new_schema(self) -> str:
        """A fresh, unique schema name (nothing is created: the adapter creates it)."""
        name = f"{SCHEMA_PREFIX}{secrets.token_hex(4)}"
        self.schemas.add(name)
        return name

    def drop_schema(self, name: str) -> None:
        """``DROP SCHEMA IF EXISTS name CASCADE``; raise if a leftover lock blocks it."""
        from psycopg import errors, sql

        drop = sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name))
        try:
            self._connection().execute(drop)
        except errors.LockNotAvailable as exc:
            raise RuntimeError(
                f"could not drop schema {name} within {DROP_LOCK_TIMEOUT}: a connection still "
                "holds a lock in it after the test (a store or a transaction left open?)"
            ) from exc
        self.schemas.discard(name)

    def drop_leftovers(self) -> list[str]:
        """Try once more to drop schemas whose teardown failed; return those still there."""
        for name in sorted(self.schemas):
            try:
                self.drop_schema(name)
            except Exception:
                continue
        return sorted(self.schemas)

    def close(self) -> None:
        """Close the connection used for dropping schemas."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None

    def _connection(self) -> psycopg.Connection[Any]:
        import psycopg

        if self._admin is None or self._admin.closed or self._admin.broken:
            self.close()
            self._admin = psycopg.connect(
                self.url, connect_timeout=CONNECT_TIMEOUT, autocommit=True
            )
            self._admin.execute(f"SET lock_timeout = '{DROP_LOCK_TIMEOUT}'")
        return self._admin


@dataclass(frozen=True)
class Database:
    """A fresh, empty database of one backend: where it is, not yet connected to."""

    backend: Backend
    database_url: str
    #: The PostgreSQL schema holding the tables, or None (SQLite).
    pg_schema: str | None = None

    def configure(self, settings: Settings) -> Settings:
        """``settings`` pointed at this database; every other setting is kept."""
        if self.pg_schema is None:
            return settings.with_(database_url=self.database_url)
        return settings.with_(database_url=self.database_url, pg_schema=self.pg_schema)


@dataclass(frozen=True)
class Backend:
    """One store adapter the suites run on."""

    name: str
    #: ``module:Class`` of the adapter that ``open_store`` picks for this backend's URLs.
    adapter: str
    #: Whether its databases live on the PostgreSQL server of the run (so need it to answer).
    on_server: bool
    #: ``provide(directory, server)`` enters a fresh database and yields it; ``directory()``
    #: makes a temporary directory (called only by backends that need one).
    provide: Callable[
        [Backend, Callable[[], Path], PostgresServer], AbstractContextManager[Database]
    ]

    def store_class(self) -> type:
        """The adapter class (imported on demand: a missing driver affects only its tests)."""
        module, _, name = self.adapter.partition(":")
        cls: type = getattr(importlib.import_module(module), name)
        return cls

    def capabilities(self) -> frozenset[str]:
        """The capabilities of :data:`CAPABILITIES` the adapter class declares true.

        Raise TypeError when the adapter does not declare one at all: every adapter states
        each capability, True or False.
        """
        cls = self.store_class()
        found = set()
        for name in CAPABILITIES:
            value = getattr(cls, name, None)
            if not isinstance(value, bool):
                raise TypeError(
                    f"{cls.__qualname__} does not declare the capability {name!r} "
                    f"(a class attribute {name}: bool = True or False)"
                )
            if value:
                found.add(name)
        return frozenset(found)

    def fresh(
        self, directory: Callable[[], Path], server: PostgresServer
    ) -> AbstractContextManager[Database]:
        """A fresh empty :class:`Database` for the block, removed afterwards."""
        return self.provide(self, directory, server)


@contextmanager
def _sqlite(
    backend: Backend, directory: Callable[[], Path], _: PostgresServer
) -> Iterator[Database]:
    yield Database(backend, f"sqlite:///{directory() / 'jobdeck.db'}")


@contextmanager
def _postgres(
    backend: Backend, _: Callable[[], Path], server: PostgresServer
) -> Iterator[Database]:
    schema = server.new_schema()
    try:
        yield Database(backend, server.url, schema)
    finally:
        server.drop_schema(schema)


#: Every backend, by name. Adding an adapter is one entry here.
BACKENDS: dict[str, Backend] = {
    "sqlite": Backend("sqlite", "jobdeck.store.sqlite:SQLiteStore", False, _sqlite),
    "postgres": Backend("postgres", "jobdeck.store.postgres:PostgresStore", True, _postgres),
}

#: Parameters (and test ids) of the backend fixtures.
BACKEND_NAMES: list[str] = list(BACKENDS)
