"""Portfolio margin: one scenario grid over an account's futures and options per underlying.

Holds the parameters (params.py), each instrument's P&L per scenario (scenarios.py), an
account's margin from them (margin.py), the same for many accounts at once (many.py),
and a portfolio account's liquidation prices (prices.py). Imports core modules below the
engine (instruments, market, pricing, risk rows), never the engine or the shell.
"""
