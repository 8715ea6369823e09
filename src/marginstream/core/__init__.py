"""The margin core: pure, deterministic Python with no Kafka or Faust import.

instruments, records and numbers read and validate input; ledger keeps each
account's exact books; market keeps index prices, marks and volatilities;
pricing, margin and risk compute the figures; riskview does the same for all
accounts at once with NumPy; alerts and decisions turn figures into outputs;
engine ties them together record by record; delivery keeps every record's effect
exactly once across commits, crashes and earlier stored formats.
"""

from marginstream.core.engine import EngineConfig, Outcome, RiskEngine
from marginstream.core.envelope import DEAD_LETTERS, DECISIONS, LIQUIDATIONS, Envelope, Output

__all__ = [
    "DEAD_LETTERS",
    "DECISIONS",
    "LIQUIDATIONS",
    "EngineConfig",
    "Envelope",
    "Outcome",
    "Output",
    "RiskEngine",
]
