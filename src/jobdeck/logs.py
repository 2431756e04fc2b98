"""Log output that never makes the event loop wait on a write.

A worker logs a line or two per job. Written by the thread that logs, each line is a write
to stderr, and, while the store's writer thread holds the interpreter, a wait to get it
back. :class:`BackgroundStreamHandler` formats on the logging thread (records stay as
they were when logged) and writes from a thread of its own, all the lines waiting at that
moment in one write.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TextIO

#: How long closing waits for the lines still queued to be written.
CLOSE_SECONDS = 5.0


class BackgroundStreamHandler(logging.Handler):
    """A stream handler whose writes happen on a daemon thread, batched.

    Lines are written in the order they were logged. :meth:`flush` returns once every line
    logged before it is written; :meth:`close` (``logging.shutdown`` calls it at exit)
    writes what is left and stops the thread. A process killed outright loses only the
    lines logged in its last moments, not yet written.
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self.stream = stream
        self._lines: queue.SimpleQueue[str | threading.Event | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._write_lines, name="jobdeck-log", daemon=True)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._lines.put(self.format(record) + "\n")
        except Exception:
            self.handleError(record)

    def flush(self) -> None:
        """Wait until every line logged so far is written (briefly, if the thread is gone)."""
        if not self._thread.is_alive():
            return
        written = threading.Event()
        self._lines.put(written)
        written.wait(CLOSE_SECONDS)

    def close(self) -> None:
        if self._thread.is_alive():
            self._lines.put(None)
            self._thread.join(CLOSE_SECONDS)
        super().close()

    def _write_lines(self) -> None:
        while True:
            item = self._lines.get()
            chunk: list[str] = []
            markers: list[threading.Event] = []
            stop = False
            while True:
                if item is None:
                    stop = True
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    chunk.append(item)
                try:
                    item = self._lines.get_nowait()
                except queue.Empty:
                    break
            if chunk:
                self._write("".join(chunk))
            for marker in markers:
                marker.set()
            if stop:
                return

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except Exception:  # a closed or broken stream: nothing to tell it to
            pass
