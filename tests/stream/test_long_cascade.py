"""A cascade longer than the session timeout on one partition does not cost the worker its
partition: the engine pauses after each account of a market record (RiskEngine.steps)
and the worker lets its heartbeats run there (stream/partition.Pace). Applied in one go, the
record held the event loop past the session: the group gave the partition away, the
worker's commit was fenced, and the next owner applied the same record again, as long.
"""

from __future__ import annotations

import time

from marginstream.core import EngineConfig, RiskEngine
from tests.stream.harness import Deployment, Reference
from tests.stream.test_liquidation import SYMBOL, TIERS, market, rec

ACCOUNTS = 30_000  # 30k liquidations: about 6 s of the core here, twice the session
SESSION = 3.0
T0 = 1_790_000_000_000


def book() -> list[dict]:
    records = [
        rec("instruments", SYMBOL, {"type": "instrument", "symbol": SYMBOL, "kind": "perpetual",
            "underlying": "BTC", "contract_size": "1", "status": "active",
            "margin": {"tiers": TIERS}}),
        *market("60000", T0),
    ]  # fmt: skip
    for n in range(ACCOUNTS):
        account = f"a{n}"
        records.append(rec("transfers", account, {"type": "deposit", "transfer_id": "d",
                       "account": account, "amount": "6500", "ts": T0}))  # fmt: skip
    for n in range(ACCOUNTS):
        account = f"a{n}"
        records.append(rec("orders", account, {"type": "fill", "fill_id": "f", "account": account,
                       "symbol": SYMBOL, "side": "buy", "qty": "1", "price": "60000",
                       "ts": T0}))  # fmt: skip
    return records


def test_a_cascade_longer_than_the_session_keeps_the_partition(deployment: Deployment):
    deployment.partitions = 1
    records = book()
    crash = market("54000", T0 + 1000)  # equity 500 against MM 540: every account
    engine = RiskEngine(EngineConfig(partitions=1))
    reference = Reference.of(records + crash, engine)
    orders = [v for t, v in reference.outputs if v.get("type") == "liquidation_order"]
    assert len(orders) == ACCOUNTS

    worker = deployment.worker("w1")
    worker.env = {**worker.env, "MARGINSTREAM_SESSION_TIMEOUT": str(SESSION)}
    worker.start()
    worker.wait_ready(partitions=1)
    deployment.produce(records)
    before = worker.health()
    began = time.monotonic()
    deployment.produce(crash)
    took = time.monotonic() - began
    after = worker.health()
    assert after["status"] == "ok", after
    # The group never moved the partition: no reopen, no fenced commit, one load.
    for key in ("reopened", "fenced", "engine_loads"):
        assert after[key] == before[key], (key, before, after, took)
    published = [v for t, v in deployment.outputs() if v.get("type") == "liquidation_order"]
    assert len(published) == ACCOUNTS, (len(published), took)
    assert took > 2 * SESSION, f"the cascade took {took:.1f}s: too short to prove anything"


def test_closing_work_owed_after_a_kill_is_paced_before_the_next_account_record(
    deployment: Deployment,
):
    """The same cascade's closing work, owed by a worker killed after committing its
    alerts (fault point before-settle), with deposits waiting behind it on the partition:
    the next owner does the work first, at the start of the deposits' first record,
    keeps its partition, and publishes the replay's closing orders once each.

    That work is paced too (stream/partition.OwnedPartition.apply), since the outside
    tester lost a partition with 80k sets owed and a 10 s session: an account record
    was applied in one go. At this size the unpaced stretch (about 2 s) stays within the
    session, so this test checks the result, not the pacing."""
    deployment.partitions = 1
    records = book()
    crash = market("54000", T0 + 1000)
    later = [
        rec("transfers", f"a{n}", {"type": "deposit", "transfer_id": "late",
            "account": f"a{n}", "amount": "1", "ts": T0 + 2000})
        for n in range(50)
    ]  # fmt: skip
    engine = RiskEngine(EngineConfig(partitions=1))
    reference = Reference.of(records + crash + later, engine)
    first = deployment.worker("w1")
    first.env = {**first.env, "MARGINSTREAM_SESSION_TIMEOUT": str(SESSION)}
    first.start(fault="before-settle:1").wait_ready(partitions=1)
    deployment.produce(records)
    deployment.produce(crash, wait=False)
    assert first.wait_exit(120) == -9  # killed with the closing work owed
    deployment.produce(later, wait=False)
    second = deployment.worker("w2")
    second.env = {**second.env, "MARGINSTREAM_SESSION_TIMEOUT": str(SESSION)}
    second.start().wait_ready(partitions=1)
    before = second.health()
    deployment.wait_applied()
    after = second.health()
    for key in ("reopened", "fenced", "engine_loads"):
        assert after[key] == before[key], (key, before, after)
    # As the replay's, once each (final_checks would also count the 30k sets' commit,
    # about 2 s, as late: it is one commit, not a wait).
    published = [v for t, v in deployment.outputs() if v.get("type") == "liquidation_order"]
    expected = [v for t, v in reference.outputs if v.get("type") == "liquidation_order"]
    assert sorted(published, key=lambda v: v["order_id"]) == sorted(
        expected, key=lambda v: v["order_id"]
    )
