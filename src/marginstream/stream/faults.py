"""Fault points for crash tests: MARGINSTREAM_FAULT=<point>:<n> kills the worker with
SIGKILL the n-th time it passes <point> (or, for the points that raise, raises there from
the n-th time on). Off (and free) unless the variable is set.

Points (the steps of stream/commit.py): before-commit (the n-th commit's outputs and
changelog records acknowledged by Kafka, its transaction not committed), after-commit
(the n-th transaction committed, the local store not yet written), during-recovery (the
changelog batch holding the n-th record read, before it is written to the store),
before-settle (the n-th time a partition is about to send the outputs of the closing
work a market record left owed, its alerts committed: stream/runner._settle_owed),
engine-error (raises on the n-th record applied, and on that record whenever it is
applied again, as a bug of the engine that a record triggers would).

Switches: layout-watch-off (the worker's periodic look at the partition layout never
runs, as if a change came just after one: only the check before each commit can find it).

Raising points of the worker's other parts: store-write (the n-th write of a local store,
a commit's step 6 or a restore's batch, and every later one raise OSError ENOSPC, as a
full disk would), fetch-error (the processing loop raises after its n-th fetch that
returned records). The first time one raises, it prints "marginstream-fault: <point> at
<unix time>" to stderr, for a test to time what follows.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time


class FaultPoints:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.at = 0
        self.count = 0
        self.failing_on: object = None  # what the n-th pass was given (engine-error)
        if spec:
            point, _, at = spec.partition(":")
            self.point, self.at = point, int(at or 1)

    def fail_on(self, point: str, subject: object) -> None:
        """Pass point with subject; raise InjectedFault on the n-th pass's subject, then
        and whenever it comes again."""
        if point != self.point:
            return
        self.count += 1
        if self.count == self.at:
            self.failing_on = subject
            _announce(point)
        if self.failing_on is not None and subject == self.failing_on:
            raise InjectedFault(f"fault point {point} reached on {subject}")

    def armed(self, point: str) -> bool:
        return point == self.point

    def hit(self, point: str, count: int | None = None) -> None:
        """Pass point once (or, with count, report how far it has got); die at the n-th."""
        if point != self.point:
            return
        self.count = self.count + 1 if count is None else count
        if self.count >= self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def fail(self, point: str, disk_full: bool = False) -> None:
        """Pass point once; raise InjectedFault (with disk_full, OSError ENOSPC) from the
        n-th pass on."""
        if point != self.point:
            return
        self.count += 1
        if self.count >= self.at:
            message = f"fault point {point} reached ({self.count})"
            if self.count == self.at:
                _announce(point)
            if disk_full:
                raise OSError(errno.ENOSPC, f"No space left on device ({message})")
            raise InjectedFault(message)


def _announce(point: str) -> None:
    """The first raise at point, timed, for a test to time what follows."""
    print(f"marginstream-fault: {point} at {time.time():.3f}", file=sys.stderr, flush=True)


class InjectedFault(RuntimeError):
    """Raised at the engine-error and fetch-error fault points."""


FAULTS = FaultPoints(os.environ.get("MARGINSTREAM_FAULT"))
