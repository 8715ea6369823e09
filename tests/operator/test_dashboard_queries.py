"""The dashboard's queries that encode a decision, evaluated by promtool on synthetic
series: their names can be right while their arithmetic is wrong (a worker down shown as
"ok", a fund summed over the partitions that happen to be reported). Each case takes the
panel's expression from the dashboard JSON itself, so editing the panel is what is tested.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.operator.promql import DASHBOARD, panels


def panel_expr(title: str, ref: str) -> str:
    for panel in panels(json.loads(DASHBOARD.read_text())):
        if panel.get("title") == title:
            for target in panel.get("targets", []):
                if target.get("refId") == ref:
                    return target["expr"]
    raise AssertionError(f"no target {ref} in panel {title!r}")


def evaluate(tmp_path: Path, series: list[dict[str, str]], checks: list[dict[str, Any]]) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: `make test` installs it (.ci/system-packages)"
    test = {
        "rule_files": [],
        "evaluation_interval": "15s",
        "tests": [{"interval": "15s", "input_series": series, "promql_expr_test": checks}],
    }
    path = tmp_path / "dashboard_test.yml"
    path.write_text(yaml.safe_dump(test, sort_keys=False))
    done = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_worker_status_shows_a_down_worker_as_down(tmp_path: Path):
    worker = 'marginstream_worker_status{{job="marginstream", instance="{0}", status="{1}"}}'
    series = [
        {"series": 'up{job="marginstream", instance="a:6066"}', "values": "1x10"},
        {"series": worker.format("a:6066", "recovering"), "values": "0x10"},
        {"series": worker.format("a:6066", "failed"), "values": "0x10"},
        {"series": 'up{job="marginstream", instance="b:6066"}', "values": "1x10"},
        {"series": worker.format("b:6066", "recovering"), "values": "1x10"},
        {"series": worker.format("b:6066", "failed"), "values": "0x10"},
        {"series": 'up{job="marginstream", instance="c:6066"}', "values": "0x10"},
    ]  # a ok, b recovering, c down (its scrape fails: no series of its own)
    evaluate(tmp_path, series, [{
        "expr": panel_expr("Worker status", "A"), "eval_time": "2m",
        "exp_samples": [
            {"labels": '{instance="a:6066"}', "value": 0},
            {"labels": '{instance="b:6066"}', "value": 1},
            {"labels": '{instance="c:6066", job="marginstream"}', "value": 3},
        ],
    }])  # fmt: skip


def test_the_fund_is_blank_while_a_partition_is_not_reported(tmp_path: Path):
    balance = (
        'marginstream_insurance_fund_balance{{job="marginstream", instance="{0}", partition="{1}"}}'
    )
    uncovered = balance.replace("balance", "uncovered")
    series = [
        # Partition 0 on worker a all along; partition 1 on worker b, which dies at 2m,
        # taken over by a at 3m (reported by both for a moment before b's death: max by).
        {"series": balance.format("a:6066", "0"), "values": "100x20"},
        {"series": balance.format("b:6066", "1"), "values": "50x8 stale"},
        {"series": balance.format("a:6066", "1"), "values": "_x8 _x4 50x7"},
        {"series": uncovered.format("a:6066", "0"), "values": "0x20"},
        {"series": uncovered.format("b:6066", "1"), "values": "5x8 stale"},
        {"series": uncovered.format("a:6066", "1"), "values": "_x8 _x4 5x7"},
    ]  # fmt: skip
    checks = []
    for ref, whole in (("A", 150), ("B", 5)):
        expr = panel_expr("Insurance fund", ref)
        checks += [
            {"expr": expr, "eval_time": "1m", "exp_samples": [{"labels": "{}", "value": whole}]},
            {"expr": expr, "eval_time": "2m30s", "exp_samples": []},  # partition 1 missing
            {"expr": expr, "eval_time": "4m", "exp_samples": [{"labels": "{}", "value": whole}]},
        ]
    evaluate(tmp_path, series, checks)
