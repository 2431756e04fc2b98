"""The background log handler: lines in order, written off the logging thread, none lost
at close."""

from __future__ import annotations

import io
import logging
import threading

from jobdeck.logs import BackgroundStreamHandler


class RecordingStream(io.StringIO):
    """A text stream that remembers which threads wrote to it, and how many times."""

    def __init__(self) -> None:
        super().__init__()
        self.writers: set[int] = set()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writers.add(threading.get_ident())
        self.writes += 1
        return super().write(text)


def make_logger(handler: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"jobdeck.test-logs.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


def test_lines_are_written_in_order_by_another_thread() -> None:
    stream = RecordingStream()
    handler = BackgroundStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = make_logger(handler)

    for n in range(500):
        logger.info("line %d", n)
    handler.flush()

    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(500)]
    assert threading.get_ident() not in stream.writers
    handler.close()


def test_close_writes_every_line_still_queued() -> None:
    stream = RecordingStream()
    handler = BackgroundStreamHandler(stream)
    logger = make_logger(handler)

    for n in range(2000):
        logger.info("line %d", n)
    handler.close()

    assert len(stream.getvalue().splitlines()) == 2000
    assert stream.writes < 2000  # lines that waited together went out in one write


def test_a_broken_stream_does_not_break_logging() -> None:
    stream = RecordingStream()
    stream.close()
    handler = BackgroundStreamHandler(stream)
    logger = make_logger(handler)

    logger.info("into a closed stream")
    handler.flush()
    handler.close()
