"""The repeat filter of stream/quietlog.py, on a real logger with a fake clock."""

from __future__ import annotations

import io
import logging

from marginstream.stream.quietlog import RepeatFilter, install


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def logger_with(
    quiet: RepeatFilter, name: str = "quiet-test"
) -> tuple[logging.Logger, io.StringIO]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    handler.addFilter(quiet)
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, out


def test_a_repeated_error_is_let_through_once_per_window_with_its_count():
    clock = Clock()
    logger, out = logger_with(RepeatFilter(window=5.0, clock=clock))
    for n in range(100):  # 100 errors over 9.9 s, varying arguments: one cause
        logger.error("Unable connect to node with id %s: %s", 1, f"refused {n}")
        clock.now += 0.1
    lines = out.getvalue().splitlines()
    assert lines == [
        "ERROR quiet-test Unable connect to node with id 1: refused 0",
        "ERROR quiet-test Unable connect to node with id 1: refused 50 (repeated 49 times in 5.0s)",
    ]


def test_causes_are_kept_apart_and_info_and_critical_never_dropped():
    clock = Clock()
    logger, out = logger_with(RepeatFilter(window=5.0, clock=clock))
    for _ in range(3):
        logger.warning("partition %d: open failed", 1)
        logger.error("partition %d: open failed", 1)  # another level: another cause
        logger.warning("commit failed")
        logger.info("partition %d open", 2)
        logger.critical("worker stops")
        try:
            raise KeyError("x")
        except KeyError:
            logger.exception("task failed")
        try:
            raise ValueError("x")
        except ValueError:
            logger.exception("task failed")  # another exception type: another cause
    text = out.getvalue()
    assert text.count("WARNING quiet-test partition 1: open failed") == 1
    assert text.count("ERROR quiet-test partition 1: open failed") == 1
    assert text.count("commit failed") == 1
    assert text.count("INFO quiet-test partition 2 open") == 3
    assert text.count("CRITICAL quiet-test worker stops") == 3
    assert text.count("task failed") == 2  # one KeyError, one ValueError


def test_one_decision_per_record_on_several_handlers():
    clock = Clock()
    quiet = RepeatFilter(window=5.0, clock=clock)
    logger, first = logger_with(quiet, "quiet-two")
    second = io.StringIO()
    other = logging.StreamHandler(second)
    other.addFilter(quiet)
    logger.addHandler(other)
    for _ in range(10):
        logger.error("again")
        clock.now += 1.0  # lines at 0..9 s: through at 0 and 5
    assert first.getvalue().splitlines() == [
        "ERROR quiet-two again",
        "ERROR quiet-two again (repeated 4 times in 5.0s)",
    ]
    assert second.getvalue().splitlines() == ["again", "again (repeated 4 times in 5.0s)"]


def test_install_puts_one_filter_on_every_root_handler():
    root = logging.Logger("root-like")
    handlers = [logging.StreamHandler(io.StringIO()), logging.StreamHandler(io.StringIO())]
    for handler in handlers:
        root.addHandler(handler)
    quiet = install(root)
    assert install(root) is quiet
    assert all(h.filters == [quiet] for h in handlers)
