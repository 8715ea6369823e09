"""Fault points for crash tests: MARGINSTREAM_FAULT=<point>:<n> kills the worker with
SIGKILL the n-th time it passes <point> (or, for engine-error, raises there, as a bug in
the engine would). Off (and free) unless the variable is set.

Points: after-local-write (state parts written to RocksDB, changelog not flushed; while
this point is armed, every record's parts are written at once, not gathered),
after-flush (changelog and outputs acknowledged by Kafka, input offset not committed),
during-recovery (n changelog records restored), engine-error (the risk handler raises
before applying its n-th record).
"""

from __future__ import annotations

import os
import signal


class FaultPoints:
    def __init__(self, spec: str | None) -> None:
        self.point: str | None = None
        self.at = 0
        self.count = 0
        if spec:
            point, _, at = spec.partition(":")
            self.point, self.at = point, int(at or 1)

    def armed(self, point: str) -> bool:
        return point == self.point

    def hit(self, point: str, count: int | None = None) -> None:
        """Pass point once (or, with count, report how far it has got); die at the n-th."""
        if point != self.point:
            return
        self.count = self.count + 1 if count is None else count
        if self.count >= self.at:
            os.kill(os.getpid(), signal.SIGKILL)

    def fail(self, point: str) -> None:
        """Pass point once; raise InjectedFault from the n-th pass on."""
        if point != self.point:
            return
        self.count += 1
        if self.count >= self.at:
            raise InjectedFault(f"fault point {point} reached ({self.count})")


class InjectedFault(RuntimeError):
    """Raised at the engine-error fault point."""


FAULTS = FaultPoints(os.environ.get("MARGINSTREAM_FAULT"))
