"""The liquidation engine: how an account in liquidation is brought back to safety.

prices gives each position's liquidation and bankruptcy price; closeout sizes the
smallest set of reduce-only orders that brings the account to a target ratio; book is
the open set an account keeps in its state; fund is the insurance fund's slice of the
partition; adl ranks opposite positions for auto-deleveraging; desk runs the life of a
set (issue, fills at the order's price, deficit, re-issue, cancel) for the engine.
Pure and deterministic, like the rest of core: replay produces the same records.
May import inputs, books, risk, outputs, portfolio and delivery's parts; never the engine,
shards, commitments or the shell (pyproject's import contracts).
"""
