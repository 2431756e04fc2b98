"""Log output that writes a burst of lines at once, and a short way for the lines of jobs.

A worker logs a line or two per job, many jobs per turn of its event loop. Written one by
one, each line is a write to stderr. :class:`BatchingStreamHandler` keeps the lines logged on
an event loop's thread until the loop has run its current callbacks, then writes them in one
go; lines from other threads go out at once, after any still waiting. No thread of its own:
one would compete for the interpreter with the store's writer thread, and make pickup slower.

:func:`log_line` is ``logger.log(level, msg, *args)`` for those per-job lines. When nothing
but such a handler with a :class:`LineFormatter` would see the record (no filter, no other
handler), it writes the same line straight into the handler, without building a record;
otherwise it logs as usual. :class:`LineFormatter` formats the date and time of each second
once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TextIO

#: The format of jobdeck's log lines (``jobdeck serve`` and ``jobdeck worker``).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_DATE_FORMAT = "%Y-%m-%d %H:%M:%S"


class LineFormatter(logging.Formatter):
    """:data:`LOG_FORMAT`, the date and time of each second formatted once."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self._second: tuple[int, str] = (-1, "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return f"{self._stamp(record.created)},{int(record.msecs):03d}"

    def line(self, created: float, level: int, name: str, message: str) -> str:
        """The line :meth:`format` makes of a record with these fields (and no exception)."""
        msecs = int((created - int(created)) * 1000)
        stamp = self._stamp(created)
        return f"{stamp},{msecs:03d} {logging.getLevelName(level)} {name}: {message}"

    def _stamp(self, created: float) -> str:
        second, stamp = self._second
        if int(created) != second:
            stamp = time.strftime(_DATE_FORMAT, self.converter(created))
            self._second = (int(created), stamp)
        return stamp


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes the lines of one turn of an event loop together.

    Lines keep the order they were logged in. :meth:`flush` (``logging.shutdown`` calls it
    at exit) writes what waits.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._waiting: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        # Handler.handle holds self.lock around this call.
        try:
            self._emit_line(self.format(record) + self.terminator)
        except Exception:
            self.handleError(record)

    def _emit_line(self, line: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._write(line)
            return
        if not self._waiting:
            loop.call_soon(self.flush)
        self._waiting.append(line)

    def flush(self) -> None:
        """Write the lines waiting, if any."""
        self.acquire()
        try:
            self._write("")
        except Exception:  # a closed or broken stream: there is nowhere to tell it
            self._waiting.clear()
        finally:
            self.release()

    def _write(self, text: str) -> None:
        if self._waiting:
            text = "".join(self._waiting) + text
            self._waiting.clear()
        if text:
            self.stream.write(text)
            self.stream.flush()


def log_line(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """``logger.log(level, msg, *args)``; the same line written straight into the handler
    when :func:`_sole_handler` finds one."""
    if not logger.isEnabledFor(level):
        return
    handler = _sole_handler(logger, level)
    if handler is None:
        logger.log(level, msg, *args)
        return
    formatter = handler.formatter
    assert isinstance(formatter, LineFormatter)
    line = formatter.line(time.time(), level, logger.name, msg % args if args else msg)
    handler.acquire()
    try:
        handler._emit_line(line + handler.terminator)
    except Exception:
        handler.handleError(logger.makeRecord(logger.name, level, "", 0, msg, args, None))
    finally:
        handler.release()


def _sole_handler(logger: logging.Logger, level: int) -> BatchingStreamHandler | None:
    """The handler a record of ``logger`` at ``level`` would reach (as ``Logger.handle``
    and ``Logger.callHandlers`` pass it on), when that is a BatchingStreamHandler with a
    LineFormatter and nothing else would see or change the record: no other handler, no
    filter on the logger or the handler."""
    if logger.filters or logger.disabled:
        return None
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        if not current.propagate:
            break
        current = current.parent
    if (
        type(found) is not BatchingStreamHandler
        or found.filters
        or level < found.level
        or type(found.formatter) is not LineFormatter
    ):
        return None
    return found
