"""The margin core: pure, deterministic Python with no Kafka or Faust import.

Grouped by what it models (docs/architecture.md draws the record path through them):

    inputs       records, intake, envelope, keys, dead letters, exact numbers
    books        an account's ledger, its requests, a partition's accounts, used ids
    risk         instruments, market, pricing, margin formulas, figures, the NumPy view
    portfolio    portfolio margin's scenario grid
    outputs      alerts, pre-trade decisions, SPEC's reports, the operator's overview
    liquidation  liquidation prices, closing sets, the insurance fund, ADL
    engine       one record in, its outputs and changed state out (ties the above)
    shards       the live layout offline: one engine per partition
    delivery     every record's effect exactly once across commits, crashes, formats
    commitments  the state tree, the input chain, proofs

The models (inputs to liquidation) never reach the engine, shards or commitments, and
nothing in core imports the shell: pyproject's import contracts, run by `make lint`.
"""

from marginstream.core.engine import EngineConfig, Outcome, RiskEngine
from marginstream.core.inputs.envelope import (
    DEAD_LETTERS,
    DECISIONS,
    LIQUIDATIONS,
    Envelope,
    Output,
)

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
