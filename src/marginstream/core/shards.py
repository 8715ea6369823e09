"""The live layout, offline: one engine per account partition, as the workers run it.

An account record goes to its partition's engine; a market record to every engine (the
fan-out), whose dead letter for it is published once, by partition 0's (as the shell
does, stream/partition.py). Accounts never meet across partitions, so for an account's
state and outputs one engine for all gives the same result; what differs is what a
partition owns as a whole: its slice of the insurance fund, and the positions its
auto-deleveraging can name. `replay --partitions N` runs this, so that live equals replay
for those too.
"""

from __future__ import annotations

from collections import ChainMap
from typing import Any

from marginstream.core.books.ledger import Account
from marginstream.core.engine import EngineConfig, Outcome, RiskEngine
from marginstream.core.inputs.envelope import Envelope, published_by
from marginstream.core.inputs.records import ACCOUNT_TOPICS
from marginstream.core.liquidation import adl


class Shards:
    def __init__(self, config: EngineConfig, count: int) -> None:
        self.config = config
        self.engines = [RiskEngine(config) for _ in range(count)]
        self.accounts: ChainMap[str, Account] = ChainMap(*(e.accounts for e in self.engines))

    def apply(self, envelope: Envelope) -> Outcome:
        if envelope.topic in ACCOUNT_TOPICS:
            # A partition past the count has no engine live; partition 0's dead-letters it.
            number = envelope.partition if envelope.partition < len(self.engines) else 0
            return self.engines[number].apply(envelope)
        outputs = []
        for number, engine in enumerate(self.engines):
            for output in engine.apply(envelope).outputs:
                if published_by(number, output, from_market=True):
                    outputs.append(output)
        return Outcome(outputs)

    def account_ids(self) -> list[str]:
        return sorted(a for engine in self.engines for a in engine.account_ids())

    def state_of(self, account: Account) -> dict[str, Any]:
        return self.engines[0].state_of(account)  # every engine has the same market

    def partitions(self) -> list[tuple[int | None, RiskEngine]]:
        return list(enumerate(self.engines))

    def ranking(self, symbol: str) -> list[adl.Ranked]:
        return adl.merged(adl.ranking(engine.view, symbol) for engine in self.engines)
