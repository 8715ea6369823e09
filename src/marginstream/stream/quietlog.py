"""Repeated log lines, rate-limited: at most one per cause every 5 seconds.

With the broker away, aiokafka logs every failed reconnect, metadata update and fetch
(about 150 ERROR lines a second for one worker, measured); a log that fast hides what
matters and fills disks. RepeatFilter, installed on the root logger's handlers when a
worker starts (stream/worker.py), lets the first WARNING or ERROR of a cause through,
drops its repeats for 5 seconds, and marks the next one let through with how many were
dropped: "... (repeated 87 times in 5.0s)". A count is reported with the next line of
its cause (none if the cause stops).

A cause is the logger's name, the level, the message template (before its arguments are
filled in: "Unable connect to node with id %s: %s" is one cause whatever the node and
error) and the type of the exception attached, if any. INFO and DEBUG lines and CRITICAL
ones (the line a worker stops with) are never dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

WINDOW_SECONDS = 5.0


class RepeatFilter(logging.Filter):
    def __init__(
        self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.window = window
        self.clock = clock
        # cause -> [when its last line was let through, repeats dropped since]
        self.causes: dict[tuple[Any, ...], list[Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        # One decision per record, however many handlers it passes through.
        decided = record.__dict__.get("_marginstream_quiet")
        if decided is not None:
            return bool(decided)
        keep = self._decide(record)
        record.__dict__["_marginstream_quiet"] = keep
        return keep

    def _decide(self, record: logging.LogRecord) -> bool:
        if not logging.WARNING <= record.levelno < logging.CRITICAL:
            return True
        exc_type = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        cause = (record.name, record.levelno, str(record.msg), exc_type)
        now = self.clock()
        seen = self.causes.get(cause)
        if seen is None:
            if len(self.causes) > 10_000:  # never grows without bound
                self.causes.clear()
            self.causes[cause] = [now, 0]
            return True
        since, dropped = seen
        if now - since < self.window:
            seen[1] += 1
            return False
        if dropped:
            record.msg = f"{record.getMessage()} (repeated {dropped} times in {now - since:.1f}s)"
            record.args = ()
        seen[0], seen[1] = now, 0
        return True


def install(root: logging.Logger | None = None) -> RepeatFilter:
    """Put one RepeatFilter on every handler of the root logger (idempotent)."""
    root = root or logging.getLogger()
    found = next((f for h in root.handlers for f in h.filters if isinstance(f, RepeatFilter)), None)
    quiet = found or RepeatFilter()
    for handler in root.handlers:
        if quiet not in handler.filters:
            handler.addFilter(quiet)
    return quiet
