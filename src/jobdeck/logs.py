"""Log output that writes a burst of lines at once.

A worker logs a line or two per job, many jobs per turn of its event loop. Written one by
one, each line is a write to stderr. :class:`BatchingStreamHandler` keeps the lines logged on
an event loop's thread until the loop has run its current callbacks, then writes them in one
go; lines from other threads go out at once, after any still waiting. No thread of its own:
one would compete for the interpreter with the store's writer thread, and make pickup slower.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TextIO


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
            line = self.format(record) + self.terminator
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self._write(line)
                return
            if not self._waiting:
                loop.call_soon(self.flush)
            self._waiting.append(line)
        except Exception:
            self.handleError(record)

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
