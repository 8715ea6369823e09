"""Margin levels and the alerts published when an account changes level.

An alert is due on every change of level and only then, so two alerts in a
row never name the same level. Ids are `<account>:alert:<n>` with n counting
the account's alerts: the same input history gives the same ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marginstream.core.books.ledger import HEALTHY, Account
from marginstream.core.inputs.numbers import risk_text
from marginstream.core.outputs.reports import position_lines
from marginstream.core.risk.figures import MarginFigures, PositionRisk

MARGIN_CALL = "margin_call"
LIQUIDATION = "liquidation"
RECOVERED = "recovered"
LEVELS = (HEALTHY, MARGIN_CALL, LIQUIDATION)


@dataclass(frozen=True, slots=True)
class Thresholds:
    margin_call: float = 0.8
    liquidation: float = 1.0

    def __post_init__(self) -> None:
        if not 0 < self.margin_call <= self.liquidation:
            raise ValueError("thresholds need 0 < margin_call <= liquidation")

    def level(self, ratio: float) -> str:
        if ratio >= self.liquidation:
            return LIQUIDATION
        if ratio >= self.margin_call:
            return MARGIN_CALL
        return HEALTHY


def alert_type(old_level: str, new_level: str) -> str | None:
    """The alert a move from old_level to new_level publishes, if any."""
    if new_level == old_level:
        return None
    return RECOVERED if new_level == HEALTHY else new_level


def raise_alert(
    account: Account,
    figures: MarginFigures,
    positions: tuple[PositionRisk, ...],
    thresholds: Thresholds,
    trigger: dict[str, Any],
    ts: int | None,
) -> dict[str, Any] | None:
    """Move the account to the level its figures imply; the alert value if the level
    changed. figures and positions: risk.total's and risk.open_positions' (assess's)."""
    new_level = thresholds.level(figures.margin_ratio)
    kind = alert_type(account.level, new_level)
    if kind is None:
        return None
    account.level = new_level
    account.alert_seq += 1
    return {
        "type": kind,
        "alert_id": f"{account.account_id}:alert:{account.alert_seq}",
        "account": account.account_id,
        "seq": account.alert_seq,
        "margin_ratio": risk_text(figures.margin_ratio),
        "equity": risk_text(figures.equity),
        "initial_margin": risk_text(figures.initial_margin),
        "maintenance_margin": risk_text(figures.maintenance_margin),
        "positions": position_lines(positions),
        "trigger": trigger,
        "ts": ts,
    }
