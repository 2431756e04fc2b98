"""The batching log handler: lines of one turn of an event loop in one write, in order;
lines logged off any loop at once; nothing left behind at flush. ``log_line``: the same
line without a record, or the usual way when something else would see the record."""

from __future__ import annotations

import asyncio
import io
import logging
import re
from typing import Any

import pytest

from jobdeck.logs import LOG_FORMAT, BatchingStreamHandler, LineFormatter, log_line


class CountingStream(io.StringIO):
    """A text stream that counts its writes."""

    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def make_logger(handler: logging.Handler) -> logging.Logger:
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger(f"jobdeck.test-logs.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


async def test_lines_of_one_loop_turn_go_out_in_one_write_in_order() -> None:
    stream = CountingStream()
    logger = make_logger(BatchingStreamHandler(stream))

    for n in range(100):
        logger.info("line %d", n)
    assert stream.writes == 0  # not before the loop has run its callbacks
    await asyncio.sleep(0)

    assert stream.getvalue().splitlines() == [f"line {n}" for n in range(100)]
    assert stream.writes == 1


def test_lines_logged_off_any_loop_are_written_at_once() -> None:
    stream = CountingStream()
    logger = make_logger(BatchingStreamHandler(stream))

    logger.info("first")
    assert stream.getvalue() == "first\n"
    logger.info("second")
    assert stream.getvalue() == "first\nsecond\n"


async def test_flush_writes_what_waits_and_a_broken_stream_breaks_nothing() -> None:
    stream = CountingStream()
    handler = BatchingStreamHandler(stream)
    logger = make_logger(handler)

    logger.info("waiting")
    handler.flush()
    assert stream.getvalue() == "waiting\n"

    stream.close()
    logger.info("into a closed stream")
    handler.flush()
    await asyncio.sleep(0)


# --- log_line and LineFormatter ------------------------------------------------------------

STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")


def line_logger(handler: logging.Handler) -> logging.Logger:
    """A logger whose records reach ``handler`` only, formatted by a LineFormatter."""
    handler.setFormatter(LineFormatter())
    logger = logging.getLogger(f"jobdeck.test-log-line.{id(handler)}")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return logger


class NoRecords(logging.Logger):
    """Fails the test when a record is made."""

    def makeRecord(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        raise AssertionError("a record was made")


def test_line_formatter_formats_as_the_standard_formatter_does() -> None:
    standard = logging.Formatter(LOG_FORMAT)
    ours = LineFormatter()
    for created in (1_700_000_000.0, 1_700_000_000.999, 1_700_000_001.5, 1_700_000_000.25):
        record = logging.LogRecord("jobdeck.worker", logging.INFO, "", 0, "job %s", ("a",), None)
        record.created = created
        record.msecs = int((created - int(created)) * 1000) + 0.0
        assert ours.format(record) == standard.format(record)
        assert ours.line(created, logging.INFO, "jobdeck.worker", "job a") == standard.format(
            record
        )


async def test_log_line_writes_the_line_the_logger_would_without_making_a_record() -> None:
    stream = io.StringIO()
    logger = line_logger(BatchingStreamHandler(stream))
    logger.info("job %s kind=%s %s", "j1", "steps", "succeeded")
    logger.__class__ = NoRecords
    try:
        log_line(logger, logging.INFO, "job %s kind=%s %s", "j1", "steps", "succeeded")
        log_line(logger, logging.DEBUG, "below the level: %s", "dropped")
        await asyncio.sleep(0)
    finally:
        logger.__class__ = logging.Logger

    standard, direct = stream.getvalue().splitlines()
    assert STAMP.match(direct)
    assert STAMP.sub("", direct) == STAMP.sub("", standard)
    assert direct.endswith(f"INFO {logger.name}: job j1 kind=steps succeeded")


@pytest.mark.parametrize("change", ["logger filter", "handler filter", "second handler"])
def test_log_line_logs_as_usual_when_something_else_would_see_the_record(change: str) -> None:
    """A filter or another handler gets the record, as from ``logger.log``."""
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    logger = line_logger(handler)
    seen: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record.getMessage())
        return True

    if change == "logger filter":
        logger.addFilter(keep)
    elif change == "handler filter":
        handler.addFilter(keep)
    else:
        other = logging.Handler()
        other.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
        logger.addHandler(other)

    log_line(logger, logging.INFO, "job %s %s", "j2", "running")

    assert seen == ["job j2 running"]
    assert stream.getvalue().endswith(f"INFO {logger.name}: job j2 running\n")
