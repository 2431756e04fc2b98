"""Fixtures every test package may use: job specs, polling with a deadline, and databases.

The store backends come from :data:`backends.BACKENDS`. ``fresh_database`` (one per test) and
``module_database`` (one per module, for modules that share one deck) are parametrised over
them, so that every test using them runs once per backend: ``test_x[sqlite]``,
``test_x[postgres]``. Whether the PostgreSQL server answers is checked once, at the start of
the run: when it does not, PostgreSQL tests skip with the reason, and under ``CI=true`` the
run stops at once with an error instead.

A test that needs a capability not every backend has declares it with
``@pytest.mark.requires_capability("name")`` and is skipped on backends whose adapter does not
declare it; tests never skip by hand.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from backends import (
    BACKEND_NAMES,
    BACKENDS,
    CAPABILITIES,
    Backend,
    Database,
    PostgresServer,
    in_ci,
    postgres_url,
    probe_postgres,
    redact,
)
from jobdeck.model import JobSpec, new_job_id

SERVER_KEY = pytest.StashKey[PostgresServer]()
LEFTOVERS_KEY = pytest.StashKey[list[str]]()
#: The fixtures that choose a backend; a test's backend is its parameter of one of them.
BACKEND_FIXTURES = ("fresh_database", "module_database")

T = TypeVar("T")


def build_spec(**overrides: Any) -> JobSpec:
    """A valid spec of kind ``steps`` with a fresh time-ordered id; keywords override fields."""
    values: dict[str, Any] = {"kind": "steps", "params": {"n_steps": 1}, "id": new_job_id()}
    values.update(overrides)
    return JobSpec(**values)


@pytest.fixture
def make_spec() -> Callable[..., JobSpec]:
    """Factory of job specs: ``make_spec(queue="q1", priority=5)``."""
    return build_spec


async def poll_until(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    what: str = "condition",
) -> T:
    """Await ``check()`` until it returns something truthy and return that; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what} not reached within {timeout} s (last value: {value!r})")
        await asyncio.sleep(interval)


@pytest.fixture
def eventually() -> Callable[..., Awaitable[Any]]:
    """``await eventually(check, timeout=..., what=...)``: poll an async check with a deadline."""
    return poll_until


# --- store backends ---------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "requires_capability(*names): run only on store backends declaring these capabilities",
    )


def checked_server(config: pytest.Config) -> PostgresServer:
    """The PostgreSQL server of this run, checked (once) for whether it answers."""
    server = config.stash.get(SERVER_KEY, None)
    if server is None:
        url = postgres_url()
        server = config.stash[SERVER_KEY] = PostgresServer(url, probe_postgres(url))
    return server


def pytest_sessionstart(session: pytest.Session) -> None:
    """Check once whether the PostgreSQL server answers; under ``CI=true`` it must."""
    server = checked_server(session.config)
    if server.error is not None and in_ci():
        pytest.exit(server.ci_failure, returncode=pytest.ExitCode.USAGE_ERROR)


def pytest_report_header(config: pytest.Config) -> str | None:
    server = config.stash.get(SERVER_KEY, None)
    if server is None:
        return None
    state = "answers" if server.error is None else f"NOT AVAILABLE ({server.error})"
    return f"store backends: {', '.join(BACKEND_NAMES)}; PostgreSQL {redact(server.url)} {state}"


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Drop the schemas whose teardown failed, if possible now; close the admin connection."""
    server = session.config.stash.get(SERVER_KEY, None)
    if server is None:
        return
    try:
        if server.schemas and server.error is None:
            session.config.stash[LEFTOVERS_KEY] = server.drop_leftovers()
    finally:
        server.close()


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Say loudly that PostgreSQL tests did not run, and which schemas were left behind."""
    server = config.stash.get(SERVER_KEY, None)
    if server is not None and server.error is not None:
        terminalreporter.write_sep("!", "PostgreSQL tests were SKIPPED", red=True, bold=True)
        terminalreporter.write_line(server.skip_reason, red=True)
    leftovers = config.stash.get(LEFTOVERS_KEY, [])
    if leftovers:
        terminalreporter.write_sep("!", "schemas left on the PostgreSQL server", red=True)
        terminalreporter.write_line(", ".join(leftovers), red=True)


@pytest.fixture(scope="session")
def postgres_server(request: pytest.FixtureRequest) -> PostgresServer:
    """The PostgreSQL server of this run (``JOBDECK_TEST_POSTGRES_URL``) and its state."""
    return checked_server(request.config)


def available_backend(name: str, server: PostgresServer) -> Backend:
    """The backend ``name``; skip (fail under ``CI=true``) when its server does not answer."""
    backend = BACKENDS[name]
    if backend.on_server and server.error is not None:
        if in_ci():
            pytest.fail(server.ci_failure, pytrace=False)
        pytest.skip(server.skip_reason)
    return backend


@pytest.fixture(params=BACKEND_NAMES, ids=BACKEND_NAMES)
def fresh_database(
    request: pytest.FixtureRequest, postgres_server: PostgresServer
) -> Iterator[Database]:
    """A fresh, empty database of each backend in turn, for one test; dropped afterwards.

    SQLite: a file in ``tmp_path``. PostgreSQL: a schema of its own on the test server.
    Point settings at it with ``fresh_database.configure(settings)``.
    """
    backend = available_backend(request.param, postgres_server)

    def directory() -> Path:
        path: Path = request.getfixturevalue("tmp_path")
        return path

    with backend.fresh(directory, postgres_server) as database:
        yield database


@pytest.fixture(scope="module", params=BACKEND_NAMES, ids=BACKEND_NAMES)
def module_database(
    request: pytest.FixtureRequest,
    postgres_server: PostgresServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Database]:
    """As ``fresh_database``, but one database per module and backend (shared decks)."""
    backend = available_backend(request.param, postgres_server)
    with backend.fresh(lambda: tmp_path_factory.mktemp(backend.name), postgres_server) as db:
        yield db


@pytest.fixture(autouse=True)
def _required_capabilities(request: pytest.FixtureRequest) -> None:
    """Skip a ``requires_capability`` test on a backend whose adapter lacks the capability."""
    required: set[str] = set()
    for marker in request.node.iter_markers("requires_capability"):
        required.update(marker.args)
    if not required:
        return
    unknown = required - CAPABILITIES
    if unknown:
        pytest.fail(f"undeclared capabilities {sorted(unknown)}; known: {sorted(CAPABILITIES)}")
    callspec = getattr(request.node, "callspec", None)
    params = callspec.params if callspec is not None else {}
    names = [params[fixture] for fixture in BACKEND_FIXTURES if fixture in params]
    if not names:
        pytest.fail("requires_capability on a test that runs on no store backend")
    server: PostgresServer = request.getfixturevalue("postgres_server")
    for name in names:
        missing = required - available_backend(name, server).capabilities()
        if missing:
            pytest.skip(f"{name} lacks {', '.join(sorted(missing))}")
