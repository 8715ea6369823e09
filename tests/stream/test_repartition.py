"""`marginstream repartition` on a stopped deployment whose partitions are not all at the
same point, on the real broker: the planned path (the account inputs not grown yet; the
command grows them).

One partition is stopped by an engine failure (the fault point) on a market record that
the others apply and commit; account records follow on the old layout, for accounts that
stay and for accounts that move, and the stopped partition never applies its share. The
move must bring that partition to the others' market position from its own fan-out
copies, apply its records on the old layout, and only then spread the accounts; the new
deployment, fed more records, ends equal to `replay --partitions 8` of every record in
the order produced (harness.final_checks).
"""

from __future__ import annotations

import re
import time
from typing import Any

from marginstream.core import EngineConfig
from marginstream.core.inputs.keys import account_partition
from marginstream.core.shards import Shards
from tests.stream.harness import Deployment, Reference, final_checks
from tests.stream.test_engine_error import wait_for_failed
from tests.stream.test_partition_change import (
    SYMBOL,
    T0,
    before_the_change,
    group_offsets,
    new_deployment,
    rec,
    repartition,
    transfer,
)


def on_the_old_layout(broken: int) -> list[dict[str, Any]]:
    """Withdrawals and deposits for every x account (some on the broken partition, some of
    those moving among 8), produced while it is stopped."""
    records = []
    for n in range(24):
        account = f"x{n}"
        records.append(transfer("withdrawal", account, f"w1-{account}", "3", T0 + 2000 + n))
        records.append(transfer("deposit", account, f"d2-{account}", "2", T0 + 2100 + n))
    movers = [  # new accounts of the broken partition that move among 8, whichever it is
        a for a in (f"y{n}" for n in range(1000))
        if account_partition(a, 4) == broken and account_partition(a, 8) != broken
    ][:3]  # fmt: skip
    for n, account in enumerate(movers):
        records.append(transfer("deposit", account, f"d-{account}", "40", T0 + 2200 + n))
        records.append(transfer("withdrawal", account, f"w-{account}", "4", T0 + 2300 + n))
    on_broken = [r for r in records if account_partition(r["key"], 4) == broken]
    moving = {r["key"] for r in on_broken if account_partition(r["key"], 8) != broken}
    assert on_broken and moving, (broken, on_broken)
    return records


def after_the_move() -> list[dict[str, Any]]:
    records = [rec("prices", SYMBOL, {"type": "mark", "symbol": SYMBOL, "price": "59000",
                                      "ts": T0 + 5000})]  # fmt: skip
    for n in range(24):
        account = f"x{n}"
        records.append(transfer("withdrawal", account, f"w3-{account}", "1", T0 + 5100 + n))
    return records


def test_a_stopped_deployment_with_a_partition_behind_moves_to_eight(deployment: Deployment):
    worker = deployment.worker("w1").start()
    worker.wait_ready(partitions=4)
    first = before_the_change()
    deployment.produce(first)
    worker.stop()

    worker.start(fault="engine-error:1")  # the next record it is handed fails, for good
    worker.wait_ready(partitions=4)
    move = rec("prices", SYMBOL, {"type": "mark", "symbol": SYMBOL, "price": "62000",
                                  "ts": T0 + 1500})  # fmt: skip
    deployment.produce([move], wait=False)
    failing = wait_for_failed(worker)["failing"]
    found = re.search(r"partition (\d+) stopped: the engine failed on prices\[0\]@", failing)
    assert found, failing
    broken = int(found.group(1))
    old_layout = on_the_old_layout(broken)
    deployment.produce(old_layout, wait=False)
    held = 1 + sum(1 for r in old_layout if account_partition(r["key"], 4) == broken)
    deadline = time.monotonic() + 60
    while deployment.lag() != held and time.monotonic() < deadline:
        time.sleep(0.2)
    assert deployment.lag() == held  # every partition but the broken one applied its share
    worker.stop()
    committed = group_offsets(deployment.bootstrap, deployment.names.group)

    moved = repartition(deployment, 8, f"{deployment.app_id}-x8")
    assert moved.returncode == 0, moved.stderr
    assert f"{held} records applied on the old layout first" in moved.stdout, moved.stdout
    # The old deployment's own offsets are untouched: it could still be run as it was.
    assert group_offsets(deployment.bootstrap, deployment.names.group) == committed

    moved_to = new_deployment(deployment, 8, f"{deployment.app_id}-x8")
    try:
        moved_to.worker("n1").start().wait_ready(partitions=8)
        later = after_the_move()
        moved_to.produce(later)
        records = [*first, move, *old_layout, *later]
        reference = Reference.of(records, Shards(EngineConfig(partitions=8), 8), roots=False)  # type: ignore[arg-type]
        final_checks(moved_to, reference)
    finally:
        moved_to.stop_all()
