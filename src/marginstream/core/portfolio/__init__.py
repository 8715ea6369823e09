"""Portfolio margin: one scenario grid over an account's futures and options per underlying.

Holds the parameters (params.py), each instrument's P&L per scenario (scenarios.py), an
account's margin from them (margin.py), the same for many accounts at once (many.py),
and a portfolio account's liquidation prices (prices.py). May import inputs and risk;
never the engine, shards, commitments or the shell (pyproject's import contracts).
"""
