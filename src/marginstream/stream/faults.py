"""Fault points for crash tests: MARGINSTREAM_FAULT=<point>:<n> kills the worker with
SIGKILL the n-th time it passes <point> (or, for engine-error, raises there, as a bug in
the engine would). Off (and free) unless the variable is set.

Points (the steps of stream/commit.py): before-commit (the n-th commit's outputs and
changelog records acknowledged by Kafka, its transaction not committed), after-commit
(the n-th transaction committed, the local store not yet written), during-recovery (the
changelog batch holding the n-th record read, before it is written to the store),
engine-error (raises before the n-th record is applied).
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
