"""The books: ledger (an account's cash, positions, orders), requests (orders, fills, transfers),
accounts (a partition's, decoded lazily), seenids. May import inputs, risk, outputs, liquidation
and delivery's parts; never the engine, shards, commitments or the shell (pyproject's contracts)."""
