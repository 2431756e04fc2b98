"""Gunicorn settings of the jobdeck API: uvicorn workers serving ``jobdeck.api:create_app()``.

The one copy of these settings. It is used three ways, all reading the same environment:

- ``jobdeck serve --workers N`` runs ``gunicorn -c python:jobdeck.gunicorn_conf``;
- ``deploy/gunicorn.conf.py`` (the file the Dockerfile uses) star-imports this module;
- by hand: ``gunicorn -c deploy/gunicorn.conf.py 'jobdeck.api:create_app()'`` or
  ``gunicorn -c python:jobdeck.gunicorn_conf`` (the app defaults to ``wsgi_app`` below).

Gunicorn's own command-line options and ``GUNICORN_CMD_ARGS`` still override these.

API processes never run jobs: every gunicorn worker gets ``JOBDECK_EMBEDDED_WORKER=0``
(``raw_env``), whatever the environment says; jobs run in ``jobdeck worker`` processes.

Environment:

- ``JOBDECK_HOST``, ``JOBDECK_PORT`` — where to listen (``bind``);
- ``JOBDECK_WEB_WORKERS`` — API processes (else gunicorn's ``WEB_CONCURRENCY``, else 2);
- ``JOBDECK_SHUTDOWN_GRACE_SECONDS`` — open requests (long-polls, event streams) get that
  long plus 5 s after SIGTERM, gunicorn kills a worker 5 s after that (``graceful_timeout``).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Mapping
from typing import Any

from jobdeck.settings import Settings

with warnings.catch_warnings():
    # uvicorn >= 0.30 points to the separate ``uvicorn-worker`` package; the class is the same.
    warnings.simplefilter("ignore", DeprecationWarning)
    from uvicorn.workers import UvicornWorker as _UvicornWorker

__all__ = [
    "bind",
    "control_socket_disable",
    "graceful_timeout",
    "logconfig_dict",
    "loglevel",
    "raw_env",
    "worker_class",
    "workers",
    "wsgi_app",
]

#: The app every gunicorn worker serves (a factory: each process builds its own Deck).
APP = "jobdeck.api:create_app()"
#: API processes when neither ``JOBDECK_WEB_WORKERS`` nor ``WEB_CONCURRENCY`` is set.
DEFAULT_WEB_WORKERS = 2
#: Seconds between uvicorn's cut of open requests and gunicorn's SIGKILL of the worker, and
#: beyond the shutdown grace for open requests (as ``jobdeck serve`` alone gives them).
SHUTDOWN_MARGIN_SECONDS = 5
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"


class UvicornWorker(_UvicornWorker):
    """uvicorn's gunicorn worker, whose graceful shutdown ends before gunicorn's.

    uvicorn alone waits for open requests without limit, so gunicorn would kill the process
    at ``graceful_timeout`` before the app's shutdown closes the store. Here uvicorn cuts
    them ``SHUTDOWN_MARGIN_SECONDS`` earlier and the app shuts down cleanly.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config.timeout_graceful_shutdown = max(
            1, self.cfg.graceful_timeout - SHUTDOWN_MARGIN_SECONDS
        )


def web_workers(environ: Mapping[str, str]) -> int:
    """API processes: ``JOBDECK_WEB_WORKERS``, else ``WEB_CONCURRENCY``, else 2."""
    for name in ("JOBDECK_WEB_WORKERS", "WEB_CONCURRENCY"):
        raw = environ.get(name, "").strip()
        if raw:
            try:
                count = int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a whole number, not {raw!r}") from None
            if count < 1:
                raise ValueError(f"{name} must be at least 1")
            return count
    return DEFAULT_WEB_WORKERS


def bind_address(host: str, port: int) -> str:
    """``host:port`` as gunicorn's ``bind`` takes it (IPv6 hosts in brackets)."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{host}:{port}"


def log_config() -> dict[str, Any]:
    """Everything to stderr, one format with the process id: gunicorn's own messages, the
    access log (uvicorn writes it through ``gunicorn.access``) and jobdeck's loggers."""
    stderr = {
        "class": "logging.StreamHandler",
        "formatter": "jobdeck",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"jobdeck": {"format": LOG_FORMAT}},
        "handlers": {"stderr": stderr},
        "root": {"level": "INFO", "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["stderr"], "propagate": False},
        },
    }


_settings = Settings.from_env()

wsgi_app = APP
bind = [bind_address(_settings.host, _settings.port)]
workers = web_workers(os.environ)
worker_class = "jobdeck.gunicorn_conf.UvicornWorker"
graceful_timeout = math.ceil(_settings.shutdown_grace_seconds) + 2 * SHUTDOWN_MARGIN_SECONDS
raw_env = ["JOBDECK_EMBEDDED_WORKER=0"]
loglevel = "info"
logconfig_dict = log_config()
# gunicorn >= 25.1 opens a control socket at one path per user ($HOME/.gunicorn/gunicorn.ctl),
# which two instances on a machine would fight over; older versions ignore the name.
control_socket_disable = True
