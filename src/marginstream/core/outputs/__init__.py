"""What the engine says: alerts (margin levels), decisions (pre-trade refusals), reports (SPEC's
JSON figures), overview (the operator's page). May import inputs, books, risk, portfolio and
liquidation; never the engine, shards, commitments or the shell (pyproject's contracts)."""
