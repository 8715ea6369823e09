"""The speed guard (`make bench-quick`): a few figures of the record path at small sizes,
each printed beside the baseline committed in bench/results/quick/baseline.json, as a ratio.

Why: the liquidation engine once made an index move 3-5x slower and no check noticed.
This runs in about three minutes on the project's 2-vCPU machine kind, on one local broker
shared by every step (each with its own deployment prefix); each figure is the median of
three rounds. Timings on a shared CI machine
are too noisy for a test: run it by hand, before and after a change to the record path,
on an otherwise idle machine, and put its table in the closing note.

A figure more than 20% worse than the baseline is flagged and the exit status is 1. A
figure better than the baseline is not an error: record the new normal with
--save-baseline once the change lands.

    python -m bench.quick                      # compare with the baseline
    python -m bench.quick --save-baseline      # make this run the baseline
    python -m bench.quick --against FILE       # compare with another run's figures
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import environment
from marginstream.localbroker import LocalBroker, free_port

QUICK = Path(__file__).parent / "results" / "quick"
BASELINE = QUICK / "baseline.json"
WORSE = 0.20  # a figure this much worse than the baseline is flagged


@dataclass(frozen=True)
class Figure:
    name: str
    unit: str
    higher_is_better: bool
    read: Callable[[dict[str, Any]], float]


@dataclass(frozen=True)
class Step:
    module: str
    options: tuple[str, ...]
    result: str  # the results file the step writes
    figures: tuple[Figure, ...]


def _ms(value: float) -> float:
    return value * 1000.0


def _ms_at(name: str, seconds: Callable[[dict[str, Any], str], float]) -> tuple[Figure, ...]:
    """A latency's p50 and p99 (lower is better), in ms; seconds(result, "p50") reads one."""
    return tuple(
        Figure(f"{name}, {p}", "ms", False, lambda r, p=p: _ms(seconds(r, p)))
        for p in ("p50", "p99")
    )


STEPS = (
    Step(
        "bench.throughput",
        ("--accounts", "10000", "--records", "15000", "--skip-peer"),
        "throughput",
        # Not its ratio to the bare aiokafka loop: that loop's one-second run swung from
        # 0.09 to 0.23 of ours between rounds of one run, the same code.
        (Figure("throughput", "records/s", True, lambda r: r["ours"]["records_per_second"]),),
    ),
    Step(
        "bench.latency",
        ("--accounts", "10000", "--moves", "6", "--rates", "1000", "--seconds", "5"),
        "latency",
        (
            *_ms_at("index move -> last alert", lambda r, p: r["remargin"][f"{p}_seconds"]),
            *_ms_at(
                "order -> decision at 1k/s", lambda r, p: r["decisions"]["1000"][f"{p}_seconds"]
            ),
        ),
    ),
    Step(
        "bench.cascade",
        ("--accounts", "2000", "--cascades", "3"),
        "cascade",
        (
            *_ms_at(
                "cascade (2k) -> last order",
                lambda r, p: r["summary"][f"to_last_order_{p}_seconds"],
            ),
            Figure(
                "cascade (2k), core CPU of the down move",
                "ms",
                False,
                lambda r: _ms(r["summary"]["core_cpu_seconds_median"]),
            ),
        ),
    ),
    Step(
        "bench.restore",
        ("--accounts", "50000", "--rounds", "1"),
        "restore-50000",
        (Figure("restore", "records/s", True, lambda r: r["ours"]["records_per_second"]),),
    ),
)


def run_steps(
    bootstrap: str, results: Path, rounds: int
) -> tuple[dict[str, float], dict[str, list[float]], list[str]]:
    """Each figure's median over the rounds, and every round's, by name; and the steps
    that failed. Rounds take turns (every step, then every step again), so that a slow
    spell of the machine does not fall on one step's runs alone."""
    runs: dict[str, list[float]] = {}
    failed = []
    env = {**os.environ, "BENCH_RESULTS": str(results), "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    for round_number in range(1, rounds + 1):
        for step in STEPS:
            print(f"=== round {round_number}: {step.module} {' '.join(step.options)}", flush=True)
            began = time.monotonic()
            path = results / f"{step.result}.json"
            path.unlink(missing_ok=True)
            done = subprocess.run(
                [sys.executable, "-m", step.module, *step.options], env=env, check=False
            )
            print(f"=== {step.module}: {time.monotonic() - began:.0f}s", flush=True)
            if done.returncode or not path.exists():
                failed.append(f"{step.module} (round {round_number})")
                continue
            written = json.loads(path.read_text())
            for figure in step.figures:
                try:
                    runs.setdefault(figure.name, []).append(float(figure.read(written)))
                except (KeyError, TypeError, ValueError):
                    failed.append(f"{step.module}: {figure.name} missing")
    return {name: statistics.median(found) for name, found in runs.items()}, runs, failed


def compare(figures: dict[str, float], baseline: dict[str, float]) -> tuple[list[str], list[str]]:
    """The table's lines, and the names of figures more than WORSE worse than baseline."""
    units = {f.name: (f.unit, f.higher_is_better) for s in STEPS for f in s.figures}
    lines = [
        "| figure | baseline | now | now / baseline | |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    worse = []
    for name, (unit, higher) in units.items():
        now, then = figures.get(name), baseline.get(name)
        if now is None or then is None or then == 0:
            shown = "missing" if now is None else f"{now:,.3g}"
            lines.append(f"| {name} ({unit}) | {then or '-'} | {shown} | | |")
            continue
        ratio = now / then
        bad = ratio < 1 - WORSE if higher else ratio > 1 + WORSE
        if bad:
            worse.append(name)
        better = "higher" if higher else "lower"
        flag = f"**{WORSE:.0%}+ worse**" if bad else ""
        lines.append(
            f"| {name} ({unit}, {better} is better) | {then:,.4g} | {now:,.4g} | {ratio:.2f} "
            f"| {flag} |"
        )
    return lines, worse


def main() -> int:
    parser = argparse.ArgumentParser(
        description="The speed guard: small-size figures of the record path against a baseline."
    )
    parser.add_argument("--save-baseline", action="store_true", help="write this run as baseline")
    parser.add_argument("--against", type=Path, default=BASELINE, help="figures to compare with")
    parser.add_argument("--out", type=Path, help="also write this run's figures here")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each step (median)")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-quick-") as directory:
        root = Path(directory)
        external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        local = None
        if not external:
            local = LocalBroker(port=free_port(), data_dir=root / "kafka", heap="1g")
            local.start()
        try:
            figures, runs, failed = run_steps(
                external or local.bootstrap, root / "results", args.rounds
            )
        finally:
            if local is not None:
                local.stop()
    seconds = time.monotonic() - began
    run = {"figures": figures, "runs": runs, "seconds": round(seconds), **environment()}
    run["commit"] = _commit()
    if args.out:
        args.out.write_text(json.dumps(run, indent=2) + "\n")
    baseline = json.loads(args.against.read_text()) if args.against.exists() else None
    print(f"\nbench-quick: {seconds:.0f}s; baseline {args.against} "
          f"({baseline['commit'] if baseline else 'none'})")  # fmt: skip
    lines, worse = compare(figures, baseline["figures"] if baseline else {})
    print("\n".join(lines))
    if args.save_baseline:
        BASELINE.write_text(json.dumps(run, indent=2) + "\n")
        print(f"baseline written to {BASELINE}")
    if failed:
        print("failed: " + ", ".join(failed), file=sys.stderr)
    if worse and not args.save_baseline:
        print(f"more than {WORSE:.0%} worse than the baseline: " + ", ".join(worse))
    return 1 if failed or (worse and not args.save_baseline) else 0


def _commit() -> str:
    done = subprocess.run(
        ["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip() or "unknown"


if __name__ == "__main__":
    sys.exit(main())
