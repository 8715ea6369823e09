"""Inputs: records (typed, validated), intake and envelope (bytes in, outputs out), keys,
deadletters, numbers (exact, bounded). May import risk.instruments, portfolio.params and
delivery.sources; never the engine, shards, commitments or the shell (pyproject's contracts)."""
