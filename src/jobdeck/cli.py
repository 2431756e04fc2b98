"""The ``jobdeck`` command: ``serve``, ``worker``, ``migrate``, ``purge``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
from collections.abc import Sequence
from typing import Any

from jobdeck.errors import SchemaTooNew
from jobdeck.logs import BatchingStreamHandler, LineFormatter
from jobdeck.retention import PURGE_BATCH
from jobdeck.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {
        "database_url": getattr(args, "database_url", None),
        "host": getattr(args, "host", None),
        "port": getattr(args, "port", None),
        "concurrency": getattr(args, "concurrency", None),
        "queues": tuple(args.queue) if getattr(args, "queue", None) else None,
        "retention_seconds": getattr(args, "older_than", None),
    }
    if getattr(args, "no_worker", False):
        overrides["embedded_worker"] = False
    return Settings.from_env(**overrides)


def serve(args: argparse.Namespace) -> int:
    """API and (unless ``--no-worker``) an embedded worker, under uvicorn; with
    ``--workers N`` (N >= 2), N API processes under gunicorn and one worker process."""
    settings = _settings(args)
    requested = getattr(args, "workers", None)
    web_workers = 1 if requested is None else requested
    if web_workers < 1:
        raise ValueError("--workers must be at least 1")
    if web_workers > 1:
        from jobdeck.supervisor import serve_many

        # Once here, so that the N API processes and the worker find the schema ready.
        logging.getLogger("jobdeck.serve").info("schema version %d", _migrate(settings))
        return serve_many(settings, web_workers)

    import uvicorn

    from jobdeck.api import create_app
    from jobdeck.deck import Deck

    app = create_app(Deck(settings))
    # uvicorn drains on SIGTERM, then raises the signal again: make that an exit with 0.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=max(1, int(settings.shutdown_grace_seconds) + 5),
        log_config=None,
    )
    return 0


def worker(args: argparse.Namespace) -> int:
    """A worker process alone; SIGTERM or SIGINT drain it and exit 0."""
    from jobdeck.deck import Deck

    settings = _settings(args)

    async def main() -> None:
        deck = Deck(settings)
        await deck.start(worker=False)
        from jobdeck.worker import Worker

        job_worker = Worker(deck.store, deck.registry, settings, name=args.name)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await job_worker.start()
        try:
            await stop.wait()
        finally:
            await job_worker.stop()
            await deck.stop()

    asyncio.run(main())
    return 0


def _migrate(settings: Settings) -> int:
    """Apply pending migrations; return the schema version."""
    from jobdeck.store import open_store

    async def main() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return await store.migrate()
        finally:
            await store.close()

    return asyncio.run(main())


def migrate(args: argparse.Namespace) -> int:
    """Apply pending migrations and print the schema version."""
    print(f"schema version {_migrate(_settings(args))}")
    return 0


def seconds(text: str) -> float:
    """A command-line duration: a finite number of seconds >= 0 (argparse type)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds >= 0: {text!r}")
    return value


def positive_int(text: str) -> int:
    """A whole number >= 1 (argparse type)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def purge(args: argparse.Namespace) -> int:
    """Delete the finished jobs older than the retention (``--older-than`` or
    ``JOBDECK_RETENTION_SECONDS``), in batches; print how many went."""
    from jobdeck.model import now_us
    from jobdeck.retention import purge_cutoff, purge_finished
    from jobdeck.store import open_store

    settings = _settings(args)
    cutoff = purge_cutoff(now_us(), settings.retention_seconds)

    async def main() -> int:
        store = open_store(settings)
        await store.open()
        try:
            return await purge_finished(store, cutoff, args.batch_size)
        finally:
            await store.close()

    purged = asyncio.run(main())
    print(f"purged {purged} jobs finished over {settings.retention_seconds:g} seconds ago")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobdeck", description="Durable background jobs for Python web services."
    )
    parser.add_argument(
        "--database-url",
        help="sqlite:///path.db or postgresql://... (default: $JOBDECK_DATABASE_URL)",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve_parser = commands.add_parser("serve", help="serve the HTTP API (and a worker)")
    serve_parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to listen on (default 8000)")
    serve_parser.add_argument(
        "--no-worker", action="store_true", help="serve the API alone, run no jobs"
    )
    serve_parser.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="N API processes under gunicorn (N >= 2), jobs in one separate worker process",
    )
    serve_parser.add_argument("--concurrency", type=int, help="jobs run at once")
    serve_parser.add_argument("--queue", action="append", help="queue to take jobs from")
    serve_parser.set_defaults(handler=serve)

    worker_parser = commands.add_parser("worker", help="run jobs, without the HTTP API")
    worker_parser.add_argument("--concurrency", type=int, help="jobs run at once")
    worker_parser.add_argument(
        "--queue", action="append", help="queue to take jobs from (repeatable)"
    )
    worker_parser.add_argument("--name", help="worker name (default host:pid:n)")
    worker_parser.set_defaults(handler=worker)

    migrate_parser = commands.add_parser("migrate", help="apply database migrations")
    migrate_parser.set_defaults(handler=migrate)

    purge_parser = commands.add_parser(
        "purge", help="delete finished jobs older than the retention, and their logs"
    )
    purge_parser.add_argument(
        "--older-than",
        type=seconds,
        metavar="SECONDS",
        help="age of the finished jobs to delete (default: $JOBDECK_RETENTION_SECONDS, a week)",
    )
    purge_parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=PURGE_BATCH,
        metavar="N",
        help=f"jobs deleted per transaction (default {PURGE_BATCH})",
    )
    purge_parser.set_defaults(handler=purge)
    return parser


def _configure_logging(*, batched: bool) -> None:
    """INFO and up to stderr. Records skip what LOG_FORMAT does not show (the caller's file
    and line, thread, process), as the logging documentation's optimisation notes suggest.

    ``batched`` (``jobdeck worker``): the lines of one turn of the event loop go out in one
    write. An API process writes each line at once instead: the write lets the interpreter
    go to the store's writer thread right after an enqueue, which then claims sooner for an
    embedded worker.
    """
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler: logging.Handler
    handler = BatchingStreamHandler(sys.stderr) if batched else logging.StreamHandler(sys.stderr)
    handler.setFormatter(LineFormatter())
    logging.basicConfig(level=logging.INFO, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``jobdeck`` console script."""
    args = build_parser().parse_args(argv)
    if not logging.getLogger().handlers:
        _configure_logging(batched=args.handler is worker)
    try:
        return args.handler(args)
    except (ValueError, SchemaTooNew) as exc:
        print(f"jobdeck: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
