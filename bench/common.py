"""What every benchmark records beside its figures: machine, versions, date."""

from __future__ import annotations

import json
import os
import platform
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

# The quick run (`bench.run --quick`) writes to results/quick/, so that it never replaces
# the figures of a full run, which BENCHMARKS.md quotes.
RESULTS = Path(os.environ.get("BENCH_RESULTS") or Path(__file__).parent / "results")


def environment() -> dict[str, Any]:
    versions = {}
    for package in (
        "marginstream",
        "numpy",
        "faust-streaming",
        "aiokafka",
        "rocksdict",
        "orjson",
        "quixstreams",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "versions": versions,
    }


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def write_result(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, **environment(), **figures}, indent=2) + "\n")
    return path
