"""Margin and risk: instruments, market, pricing (Black-76), margin (formulas), figures (one
account), view (all accounts, NumPy). May import inputs, books, outputs, portfolio, delivery's
parts; never the engine, shards, commitments or the shell (pyproject's contracts)."""
