"""Partitions added to orders and transfers under a running deployment (as
`kafka-topics --alter --partitions` does), on the real broker.

The outside tester's case: a worker on 4 partitions, the account inputs grown to 8, then
keyed records. Before, 6 of 16 deposits were stranded on partitions 4-7 with /health/
saying ok, and the restart's advice went in a circle. Now:

- the worker says `failed` naming the topics and both counts within one session
  timeout, and exits non-zero; nothing produced after the change is committed on the
  old layout (group offsets, changelog and outputs as they were before it);
- a restart refuses in one line naming every differing topic, with or without
  MARGINSTREAM_PARTITIONS=8, and the advice is the same: `marginstream repartition`;
- following it, the new deployment ends equal to `replay --partitions 8` of every
  record (harness.final_checks: state, outputs, changelog versions, fresh restore).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewPartitions

from marginstream.core import EngineConfig
from marginstream.core.inputs.keys import account_partition
from marginstream.core.shards import Shards
from marginstream.localworker import LocalWorker
from marginstream.stream.runner import LAYOUT_EXIT_SECONDS
from tests.stream.harness import Deployment, Reference, final_checks

T0 = 1_790_000_000_000
SYMBOL = "BTC-PERP"
SESSION = 6.0  # LocalDeployment's session timeout
TIERS = [{"up_to": None, "initial": "0.02", "maintenance": "0.01"}]


def rec(topic: str, key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"topic": topic, "key": key, "value": value}


def transfer(kind: str, account: str, transfer_id: str, amount: str, ts: int) -> dict[str, Any]:
    value = {"type": kind, "transfer_id": transfer_id, "account": account, "amount": amount}
    return rec("transfers", account, {**value, "ts": ts})


def before_the_change() -> list[dict[str, Any]]:
    records = [
        rec("instruments", SYMBOL, {"type": "instrument", "symbol": SYMBOL, "kind": "perpetual",
            "underlying": "BTC", "contract_size": "1", "status": "active",
            "margin": {"tiers": TIERS}}),
        rec("prices", "BTC", {"type": "index", "underlying": "BTC", "price": "60000", "ts": T0}),
        rec("prices", SYMBOL, {"type": "mark", "symbol": SYMBOL, "price": "60000", "ts": T0}),
    ]  # fmt: skip
    for n in range(24):
        account = f"x{n}"
        records.append(transfer("deposit", account, f"d-{account}", "1000", T0 + n))
        if n % 3 == 0:
            records.append(rec("orders", account, {
                "type": "fill", "fill_id": f"f-{account}", "account": account, "symbol": SYMBOL,
                "side": "buy" if n % 2 else "sell", "qty": "0.01", "price": "60000",
                "ts": T0 + 100 + n}))  # fmt: skip
    records.append(rec("prices", SYMBOL, {"type": "mark", "symbol": SYMBOL, "price": "61000",
                                          "ts": T0 + 200}))  # fmt: skip
    return records


def after_the_change() -> list[dict[str, Any]]:
    """Deposits (the tester's) and withdrawals (each decided: an output to look for) for
    accounts that keep their partition among 8 and accounts that move, and new ones."""
    records = []
    for n in range(16):
        account = f"x{n}"
        records.append(transfer("deposit", account, f"late-{account}", "1", T0 + 1000 + n))
        records.append(transfer("withdrawal", account, f"w-{account}", "5", T0 + 1100 + n))
    for n in range(16):
        records.append(transfer("deposit", f"new{n}", f"d-new{n}", "50", T0 + 1200 + n))
    return records


def group_offsets(bootstrap: str, group: str) -> dict[Any, int]:
    async def read() -> dict[Any, int]:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            found = await admin.list_consumer_group_offsets(group)
            return {(tp.topic, tp.partition): meta.offset for tp, meta in found.items()}
        finally:
            await admin.close()

    return asyncio.run(read())


def grow(bootstrap: str, topics: list[str], count: int) -> None:
    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_partitions({t: NewPartitions(total_count=count) for t in topics})
        finally:
            await admin.close()

    asyncio.run(create())


def refusal(worker: LocalWorker) -> str:
    """The one line a worker refused to start with (it must exit 2)."""
    worker.start()
    assert worker.wait_exit(120) == 2, worker.log_tail()
    lines = [
        line for line in worker.log_path.read_text().split("===== start")[-1].splitlines()
        if line.startswith("marginstream: error: ")
    ]  # fmt: skip
    assert len(lines) == 1, worker.log_tail()
    return lines[0]


def repartition(deployment: Deployment, count: int, app_id: str) -> subprocess.CompletedProcess:
    """`marginstream repartition`, run with the deployment's workers' environment."""
    return subprocess.run(
        [sys.executable, "-m", "marginstream", "repartition", "--partitions", str(count),
         "--to-app-id", app_id],
        env={**os.environ, **deployment.env()}, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def new_deployment(deployment: Deployment, count: int, app_id: str) -> Deployment:
    """The deployment a move made: the same prefix, the new app id and count."""
    return Deployment(
        deployment.bootstrap,
        deployment.root / app_id,
        partitions=count,
        tag=deployment.tag,
        app_name=app_id,
    )


def test_partitions_grown_under_a_live_worker(deployment: Deployment):
    """The periodic look at the layout is off (a fault switch), so that the check before
    each commit alone must stop the records applied after the change from committing:
    the broker takes a second or so to elect the new partitions' leaders, long enough
    for a periodic look to win the race every time otherwise."""
    names = deployment.names
    worker = deployment.worker("w1").start(fault="layout-watch-off")
    worker.wait_ready(partitions=4)
    first = before_the_change()
    deployment.produce(first)
    committed = group_offsets(deployment.bootstrap, names.group)
    changelog_before = len(deployment.changelog())
    outputs_before = deployment.outputs()

    grow(deployment.bootstrap, names.account_inputs(), 8)
    grown_at = time.monotonic()
    later = after_the_change()
    assert {account_partition(r["key"], 8) for r in later} >= {0, 1, 2, 3, 4, 5, 6, 7}
    deployment.produce(later, wait=False)

    failing = None
    while worker.alive() and failing is None and time.monotonic() < grown_at + SESSION:
        health = worker.health() or {}
        if health.get("status") == "failed":
            failing = health["failing"]
        time.sleep(0.05)
    assert failing is not None, f"not failed one session after the change: {health}"
    for topic in names.account_inputs():
        assert f"{topic} has 8 partitions, not 4" in failing, failing
    code = worker.wait_exit(SESSION + LAYOUT_EXIT_SECONDS + 10)
    assert code != 0
    stops = [ln for ln in worker.log_path.read_text().splitlines()
             if ln.startswith("marginstream: worker stops: ")]  # fmt: skip
    assert len(stops) == 1 and "orders has 8 partitions, not 4" in stops[0], stops

    # Nothing past the change was committed: offsets, changelog and outputs as before.
    assert group_offsets(deployment.bootstrap, names.group) == committed
    assert len(deployment.changelog()) == changelog_before
    assert deployment.outputs() == outputs_before

    # The restart refuses, with or without the count the tester tried, naming every
    # differing topic and the same one thing to do.
    advice = "marginstream repartition --partitions 8 --to-app-id"
    line = refusal(worker)
    for topic in [*names.account_inputs()]:
        assert f"{topic} has 8" in line, line
    assert advice in line, line
    deployment.extra_env["MARGINSTREAM_PARTITIONS"] = "8"
    line = refusal(deployment.worker("w8"))
    for topic in names.internal():
        assert f"{topic} has 4" in line, line
    assert advice in line, line

    # The advice, followed: move the state, run the new deployment.
    del deployment.extra_env["MARGINSTREAM_PARTITIONS"]
    moved = repartition(deployment, 8, f"{deployment.app_id}-8")
    assert moved.returncode == 0, moved.stderr
    assert re.search(r"moved .* \(4 partitions\) to .* \(8 partitions\)", moved.stdout)
    again = repartition(deployment, 8, f"{deployment.app_id}-8")
    assert again.returncode == 1 and "already has offsets" in again.stderr, again.stderr
    # Under another app id too (outside tester: it published the move's outputs twice).
    elsewhere = repartition(deployment, 8, f"{deployment.app_id}-again")
    assert elsewhere.returncode == 1, elsewhere.stderr
    assert f"was moved already, to {deployment.prefix}{deployment.app_id}-8" in elsewhere.stderr

    moved_to = new_deployment(deployment, 8, f"{deployment.app_id}-8")
    try:
        moved_to.worker("n1").start().wait_ready(partitions=8)
        records = first + later
        reference = Reference.of(records, Shards(EngineConfig(partitions=8), 8), roots=False)  # type: ignore[arg-type]
        final_checks(moved_to, reference)
    finally:
        moved_to.stop_all()


def test_the_watch_reads_every_topic_of_the_layout(deployment: Deployment):
    """An output topic grown under a live worker is a change too (its outputs would go to
    other partitions than the consumers' per-account order expects)."""
    worker = deployment.worker("w1").start()
    worker.wait_ready(partitions=4)
    grow(deployment.bootstrap, [deployment.prefix + "decisions"], 6)
    deadline = time.monotonic() + SESSION
    while time.monotonic() < deadline:
        health = worker.health() or {}
        if health.get("status") == "failed":
            break
        time.sleep(0.1)
    assert "decisions has 6 partitions, not 4" in (health.get("failing") or ""), health
    assert worker.wait_exit(30) != 0
