"""The soak: workers on a broker of their own, killed, paused and cut off at random moments.

    python -m tests.stream.soak            # what `make soak` runs (at least 200k records)
    python -m tests.stream.soak --short    # what CI runs (tests/stream/test_soak.py)

The records are produced run by run (feeds/segments: a live system applies them in the
replay's order); after each run is produced, the actions drawn for it happen while the
run is being applied:

- kill -9 of a worker, restarted after a random delay;
- a broker restart, by kill -9 or a clean stop, down for a random while;
- a pause (SIGSTOP) of a worker past the session timeout, then SIGCONT. The paused
  worker is alternately the one holding the highest partition and the one holding
  partition 0, so that it both regains its own partitions and gets others' (the assignor
  is deterministic); which happened is read off its assignment and counted.

It ends with tests/stream/harness.final_checks and prints (and writes to
bench/results/soak[-short].json) one line of figures.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from marginstream.core import EngineConfig
from marginstream.core.shards import Shards
from marginstream.feeds.load import LoadFeed, load_events
from marginstream.feeds.segments import segments
from marginstream.localbroker import LocalBroker, free_port
from marginstream.localworker import LocalWorker
from tests.stream.harness import Deployment, Reference, final_checks

SESSION_TIMEOUT = 6.0  # LocalDeployment's
RESULTS = Path(__file__).parents[2] / "bench" / "results"


@dataclass(frozen=True)
class Plan:
    records: int
    workers: int
    partitions: int
    kills: int
    broker_restarts: int
    pauses: int
    seed: int = 20261125


FULL = Plan(records=200_000, workers=3, partitions=6, kills=100, broker_restarts=10, pauses=10)
SHORT = Plan(records=15_000, workers=2, partitions=4, kills=10, broker_restarts=2, pauses=2)


def feed_for(plan: Plan) -> list[dict[str, Any]]:
    """A LoadFeed of at least plan.records records (about 3.1 per trade)."""
    rounds = max(4, plan.records // 20_000 * 2)
    trades = plan.records // (rounds * 3) + 50
    records = list(
        load_events(LoadFeed(accounts=2000, rounds=rounds, trades_per_round=trades, seed=5))
    )
    assert len(records) >= plan.records, len(records)
    return records


class Soak:
    def __init__(self, plan: Plan, root: Path) -> None:
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.broker = LocalBroker(port=free_port(), data_dir=root / "kafka")
        self.deployment = Deployment(
            self.broker.bootstrap, root / "deployment", partitions=plan.partitions, label="soak"
        )
        self.done: Counter[str] = Counter()

    # -- actions -----------------------------------------------------------------

    def kill(self) -> None:
        worker = self.rng.choice([w for w in self.workers if w.alive()])
        worker.kill9()
        time.sleep(self.rng.uniform(0.0, 3.0))
        worker.start()
        self.done["kills"] += 1

    def broker_restart(self) -> None:
        if self.done["broker_restarts"] % 2 == 0:
            self.broker.kill()
            self.done["broker_kills"] += 1
        else:
            self.broker.stop()
            self.done["broker_stops"] += 1
        time.sleep(self.rng.uniform(1.0, 5.0))
        self.broker.start()
        self.done["broker_restarts"] += 1

    def pause(self) -> None:
        holdings = {w: self._assigned(w) for w in self.workers}
        holdings = {w: held for w, held in holdings.items() if held}
        if len(holdings) < 2:
            return  # a rebalance under way: draw again with the next action
        top = self.done["pauses"] % 2 == 0
        pick = max if top else min
        worker = pick(holdings, key=lambda w: pick(holdings[w]))
        before = holdings[worker]
        worker.pause()
        time.sleep(SESSION_TIMEOUT + self.rng.uniform(1.0, 4.0))
        worker.resume()
        after = self._settled(worker)
        self.done["pauses"] += 1
        self.done["pauses_regained_own" if after == before else "pauses_got_others"] += 1

    def _assigned(self, worker: LocalWorker) -> list[int]:
        return sorted((worker.health() or {}).get("assigned", []))

    def _settled(self, worker: LocalWorker, timeout: float = 120.0) -> list[int]:
        """The worker's partitions once the group has settled after it came back."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = worker.health() or {}
            if health.get("status") == "ok" and health.get("assigned"):
                return sorted(health["assigned"])
            time.sleep(0.2)
        return []

    # -- the run -----------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        plan = self.plan
        began = time.monotonic()
        records = feed_for(plan)
        shards = Shards(EngineConfig(partitions=plan.partitions), plan.partitions)
        reference = Reference.of(records, shards)  # type: ignore[arg-type]
        runs = segments(records)
        actions = (
            ["kill"] * plan.kills + ["broker_restart"] * plan.broker_restarts
            + ["pause"] * plan.pauses
        )  # fmt: skip
        schedule: dict[int, list[str]] = {}
        for action in actions:
            schedule.setdefault(self.rng.randrange(len(runs)), []).append(action)
        for drawn in schedule.values():
            self.rng.shuffle(drawn)  # not every broker restart right after a kill
        self.broker.start()
        try:
            self.workers = [self.deployment.worker(f"w{n}").start() for n in range(plan.workers)]
            for worker in self.workers:
                worker.wait_ready()
            for number, run in enumerate(runs):
                self.deployment.produce(run, wait=False)
                for action in schedule.get(number, []):
                    time.sleep(self.rng.uniform(0.0, 0.5))  # somewhere in the run
                    getattr(self, action)()
                self.deployment.wait_applied(timeout=900)
                self._all_alive()
                if number % 10 == 0:
                    print(f"soak: run {number}/{len(runs)}, {dict(self.done)}", flush=True)
            deadline = time.monotonic() + 300
            while self.done["pauses"] < plan.pauses:  # those drawn during a rebalance
                if time.monotonic() > deadline:
                    raise AssertionError(f"the group never settled for a pause: {self.done}")
                self.pause()  # returns at once, uncounted, while the group rebalances
                time.sleep(0.5)
            self._all_alive()
            findings = final_checks(self.deployment, reference)
        finally:
            self.deployment.stop_all()
            self.broker.stop()
        refused = sum(
            line.count("ProducerFenced") > 0
            for worker in self.workers
            for line in worker.log_path.read_text(errors="replace").splitlines()
            if "partition" in line
        )
        figures = {
            **asdict(plan),
            "commits_refused_to_fenced_workers": refused,
            "records": len(records),
            "runs": len(runs),
            **self.done,
            **findings,
            "minutes": round((time.monotonic() - began) / 60, 1),
        }
        return figures

    def _all_alive(self) -> None:
        """No worker may have died on its own, but for the one death a supervisor expects:
        a worker (re)started while the broker was down exits at once, saying so; it is
        restarted, as its supervisor would, and counted."""
        for worker in self.workers:
            if worker.alive():
                continue
            since_start = worker.log_tail(400).rpartition("===== start")[2]
            if "marginstream: error: cannot reach Kafka" not in since_start:
                raise AssertionError(f"{worker.log_path} exited:\n{worker.log_tail()}")
            worker.start()
            self.done["restarts_after_broker_away_at_start"] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--short", action="store_true", help="the CI version")
    args = parser.parse_args()
    plan = SHORT if args.short else FULL
    with tempfile.TemporaryDirectory(prefix="soak-") as directory:
        figures = Soak(plan, Path(directory)).run()
    line = ", ".join(f"{k} {v}" for k, v in figures.items())
    print(f"soak: {line}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / ("soak-short.json" if args.short else "soak.json")
    path.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"written to {path}")


if __name__ == "__main__":
    main()
