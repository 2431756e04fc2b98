"""Gunicorn configuration of the jobdeck API (the file the Dockerfile uses).

    gunicorn -c deploy/gunicorn.conf.py 'jobdeck.api:create_app()'

The settings live in the installed package, ``jobdeck.gunicorn_conf`` (``jobdeck serve
--workers N`` uses that module directly), so this file and ``serve`` cannot drift apart.
They read the environment: ``JOBDECK_HOST`` and ``JOBDECK_PORT`` (bind),
``JOBDECK_WEB_WORKERS`` (API processes, default 2), ``JOBDECK_SHUTDOWN_GRACE_SECONDS``
(graceful timeout). Every worker is a uvicorn worker with the embedded job worker off: run
jobs with ``jobdeck worker``. Override anything below the import, or on gunicorn's
command line.
"""

from jobdeck.gunicorn_conf import *  # noqa: F403
