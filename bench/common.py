"""What every benchmark of ``bench/`` shares: paths, fresh databases, figures, the machine,
the command line (the processes are in ``processes.py``).

- :class:`Database` is a fresh SQLite file in a temporary directory or a PostgreSQL schema of
  its own, dropped at the end; it gives the environment of jobdeck's processes, in-process
  :class:`~jobdeck.Settings`, and a plain connection for reading results.
- :func:`summarize`, :func:`machine_info` and :func:`replace_section` turn samples into the
  figures, the machine description and the sections of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import re
import secrets
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
RESULTS_DIR = BENCH_DIR / "results"
DOCS_FILE = ROOT / "docs" / "benchmarks.md"
#: The console script of the jobdeck installed next to this interpreter.
JOBDECK = Path(sys.executable).with_name("jobdeck")
#: The PostgreSQL server (the one the tests use, unless ``--postgres-url`` says otherwise).
POSTGRES_URL_ENV = "JOBDECK_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
#: The task kinds of the benchmarks (``bench/bench_tasks.py``), loaded by every process.
TASKS_MODULE = "bench_tasks"
BACKENDS = ("sqlite", "postgres")
START_SECONDS = 30.0
STOP_SECONDS = 60.0
TERMINAL = ("succeeded", "failed", "cancelled")
DOCS_INTRO = (
    "# Benchmarks\n\n"
    "Figures measured on real processes with the scripts in `bench/`; each section says on "
    "which machine, when, and how to rerun it.\n"
)


# --- waiting and ports ----------------------------------------------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Call ``check()`` until it returns something truthy; raise TimeoutError at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(interval)


# --- databases ------------------------------------------------------------------------------


def drop_schema(url: str, schema: str) -> None:
    """``DROP SCHEMA ... CASCADE`` of a benchmark's schema."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def postgres_problem(url: str) -> str | None:
    """None when PostgreSQL at ``url`` answers, else why not."""
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3, autocommit=True) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return None


def default_postgres_url() -> str:
    """``$JOBDECK_TEST_POSTGRES_URL``, else the local test server."""
    return os.environ.get(POSTGRES_URL_ENV, "").strip() or DEFAULT_POSTGRES_URL


def usable_backends(backends: Sequence[str], postgres_url: str) -> list[str]:
    """``backends`` without PostgreSQL when it does not answer (said on stderr)."""
    if "postgres" not in backends:
        return list(backends)
    problem = postgres_problem(postgres_url)
    if problem is None:
        return list(backends)
    print(
        f"!!! PostgreSQL at {postgres_url} does not answer ({problem}): measuring SQLite "
        f"only. Set {POSTGRES_URL_ENV} or --postgres-url.",
        file=sys.stderr,
    )
    return [b for b in backends if b != "postgres"]


class Database:
    """A fresh jobdeck database: a SQLite file in ``workdir`` or a PostgreSQL schema of its
    own (dropped on exit). ``sql()`` writes ``{jobs}`` as the jobs table and ``?`` as the
    driver's parameter mark, so one statement reads both."""

    def __init__(self, backend: str, workdir: Path, postgres_url: str) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}")
        self.backend = backend
        self.workdir = workdir
        self.postgres_url = postgres_url
        self.schema = f"jobdeck_bench_{secrets.token_hex(4)}" if backend == "postgres" else None
        self.path = workdir / "jobdeck.db"

    @property
    def url(self) -> str:
        if self.backend == "sqlite":
            return f"sqlite:///{self.path}"
        return self.postgres_url

    def env(self, **settings: str | int | float) -> dict[str, str]:
        """This environment without ``JOBDECK_*``, then the database, the benchmark task
        module and ``settings`` (``concurrency=500`` is ``JOBDECK_CONCURRENCY=500``); every
        other setting keeps its default."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBDECK_")}
        python_path = [str(BENCH_DIR), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(python_path)
        env["PYTHONUNBUFFERED"] = "1"
        env["JOBDECK_TASKS"] = TASKS_MODULE
        env["JOBDECK_DATABASE_URL"] = self.url
        if self.schema is not None:
            env["JOBDECK_PG_SCHEMA"] = self.schema
        env.update({f"JOBDECK_{k.upper()}": str(v) for k, v in settings.items()})
        return env

    def settings(self) -> Any:
        """The same settings for a :class:`~jobdeck.Deck` in this process."""
        from jobdeck import Settings

        schema = {"pg_schema": self.schema} if self.schema is not None else {}
        return Settings(database_url=self.url, tasks=(TASKS_MODULE,), **schema)

    @property
    def table(self) -> str:
        return "jobs" if self.schema is None else f'"{self.schema}".jobs'

    def sql(self, text: str) -> str:
        """``text`` for this backend's driver."""
        text = text.replace("{jobs}", self.table)
        return text if self.backend == "sqlite" else text.replace("?", "%s")

    @contextlib.contextmanager
    def connect(self) -> Iterator[Any]:
        """A plain connection in autocommit mode (sqlite3 or psycopg)."""
        if self.backend == "sqlite":
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            try:
                yield conn
            finally:
                conn.close()
            return
        import psycopg

        with psycopg.connect(self.postgres_url, autocommit=True) as pg:
            yield pg

    def one(self, text: str, args: Sequence[Any] = ()) -> tuple[Any, ...]:
        """The first row of a query (``text`` as :meth:`sql` takes it)."""
        with self.connect() as conn:
            row = conn.execute(self.sql(text), tuple(args)).fetchone()
        assert row is not None
        return tuple(row)

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_: object) -> None:
        if self.schema is not None:
            drop_schema(self.postgres_url, self.schema)


# --- figures --------------------------------------------------------------------------------


_MICROSECOND = timedelta(microseconds=1)


def micros(stamp: str) -> int:
    """Microseconds since the epoch of an RFC 3339 time as the API writes it."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // _MICROSECOND


def summarize(values: Sequence[float], digits: int = 1) -> dict[str, float]:
    """n, p50, p95, p99, mean, min and max of ``values``, rounded to ``digits``."""
    if not values:
        return {"n": 0}
    cuts = statistics.quantiles(values, n=100, method="inclusive") if len(values) > 1 else []
    figures = {
        "p50": statistics.median(values),
        "p95": cuts[94] if cuts else values[0],
        "p99": cuts[98] if cuts else values[0],
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
    }
    return {"n": len(values), **{k: round(v, digits) for k, v in figures.items()}}


def rate(count: int, seconds: float) -> float | None:
    """``count / seconds``, rounded; None when nothing was timed."""
    return round(count / seconds, 1) if seconds > 0 else None


def now_iso() -> str:
    """The current UTC time, to the second."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


# --- the machine ----------------------------------------------------------------------------


def machine_info(postgres_url: str | None) -> dict[str, Any]:
    """Where the figures were measured: platform, CPUs, versions, date."""
    cpu_model = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    memory_gb = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        memory_gb = round(kib / 1024 / 1024, 1)
    versions = {"python": platform.python_version(), "sqlite": sqlite3.sqlite_version}
    for package in ("jobdeck", "fastapi", "uvicorn", "gunicorn", "httpx", "psycopg"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    if postgres_url is not None:
        with contextlib.suppress(Exception):
            import psycopg

            with psycopg.connect(postgres_url, connect_timeout=3) as conn:
                row = conn.execute("SHOW server_version").fetchone()
                versions["postgresql"] = row[0] if row else None
    commit = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "date": now_iso(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "memory_gb": memory_gb,
        "load_average": load_average(),
        "versions": versions,
        "git": commit,
    }


def machine_line(machine: dict[str, Any]) -> str:
    """The machine in one markdown list item."""
    return (
        f"- Machine: {machine['platform']}, {machine['cpu_model']}, {machine['cpu_count']} "
        f"CPUs, {machine['memory_gb']} GB; load average at the start {machine['load_average']}."
    )


def versions_line(machine: dict[str, Any]) -> str:
    """The versions in one markdown list item."""
    versions = machine["versions"]
    return (
        f"- Versions: Python {versions.get('python')}, SQLite {versions.get('sqlite')}, "
        f"PostgreSQL {versions.get('postgresql', 'n/a')} (same machine, over TCP), "
        f"gunicorn {versions.get('gunicorn')}, uvicorn {versions.get('uvicorn')}, "
        f"psycopg {versions.get('psycopg')}, jobdeck {versions.get('jobdeck')} "
        f"(`{machine['git']}`)."
    )


# --- files ----------------------------------------------------------------------------------


def write_json(path: Path, data: Any) -> None:
    """``data`` as indented JSON (UTF-8, not escaped)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def section_markers(owner: str) -> tuple[str, str]:
    """The comments around the section of ``docs/benchmarks.md`` that ``owner`` writes."""
    return f"<!-- {owner}: begin -->", f"<!-- {owner}: end -->"


def replace_section(path: Path, owner: str, section: str, *, before: str | None = None) -> None:
    """Replace the section of ``owner`` in ``path``; a new one goes before the section of
    ``before`` if there is one, else at the end (the file is created if needed).
    ``section`` is the text without its markers. Text outside the markers is kept."""
    begin, end = section_markers(owner)
    block = f"{begin}\n{section.strip()}\n{end}"
    text = path.read_text(encoding="utf-8") if path.exists() else DOCS_INTRO
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    elif before is not None and section_markers(before)[0] in text:
        marker = section_markers(before)[0]
        text = text.replace(marker, f"{block}\n\n{marker}", 1)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")


def names_arg(allowed: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma-separated choice among ``allowed``."""

    def parse(text: str) -> list[str]:
        chosen = [part.strip() for part in text.split(",") if part.strip()]
        unknown = set(chosen) - set(allowed)
        if unknown or not chosen:
            raise argparse.ArgumentTypeError(f"choose among {', '.join(allowed)}")
        return chosen

    return parse


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """``--backends`` and ``--postgres-url``, as every benchmark takes them."""
    parser.add_argument("--backends", type=names_arg(BACKENDS), default=list(BACKENDS))
    parser.add_argument("--postgres-url", default=default_postgres_url())


def scenario_main(
    doc: str,
    run: Callable[[argparse.Namespace], dict[str, Any]],
    argv: Sequence[str] | None,
    *,
    quick: str,
    extend: Callable[[argparse.ArgumentParser], None] | None = None,
    profile_file: str | None = None,
) -> int:
    """The command line of a scenario module: ``--backends``, ``--postgres-url``, ``--quick``
    (help text ``quick``), what ``extend`` adds, and ``--profile DIR`` when ``profile_file``
    names the py-spy file of each backend (``"drain-{backend}.txt"``). Prints the figures
    as JSON (with a summary of each profile)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--quick", action="store_true", help=quick)
    if profile_file is not None:
        parser.add_argument("--profile", type=Path, help="py-spy into this dir (profiling.py)")
    if extend is not None:
        extend(parser)
    args = parser.parse_args(argv)
    args.backends = usable_backends(args.backends, args.postgres_url)
    profile: Path | None = getattr(args, "profile", None)
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
    result = run(args)
    if profile is not None and profile_file is not None:
        from profiling import where_time_goes

        result["profiles"] = {
            b: where_time_goes(profile / profile_file.format(backend=b)) for b in args.backends
        }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


def log(message: str) -> None:
    """Progress of a benchmark, on stderr."""
    print(f"[{datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)
