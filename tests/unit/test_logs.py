"""The batching log handler: lines of one turn of an event loop in one write, in order;
lines logged off any loop at once; nothing left behind at flush."""

from __future__ import annotations

import asyncio
import io
import logging

from jobdeck.logs import BatchingStreamHandler


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
