"""The operator's files: Prometheus's alert rules, their unit tests and configuration
(docker/prometheus/), and the Grafana dashboard (docker/grafana/).

promtool (Debian's prometheus package) checks and unit-tests the rules: `make test`
installs it (.ci/system-packages), so a missing promtool fails here, never skips. Every
query names only the metrics a worker exports (METRICS, as documented) with labels they
have; the check against a live worker's /metrics uses the same promql.py.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.operator.promql import (
    DASHBOARD,
    RULES,
    TARGET_LABELS,
    expressions,
    panels,
    selectors,
)

PROMETHEUS = RULES.parent
RULES_TEST = PROMETHEUS / "rules_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
PROVISIONING = DASHBOARD.parent.parent / "provisioning"

# What a worker exports at GET /metrics: name -> label names (docs/metrics.md's table, and the
# gauges of the worker status, commits, insurance fund, accounts and liquidations).
METRICS: dict[str, set[str]] = {
    "up": set(),  # Prometheus's own, per target
    "marginstream_records_applied_total": {"topic"},
    "marginstream_alerts_total": {"level"},
    "marginstream_liquidation_records_total": {"type"},
    "marginstream_dead_letters_total": {"reason"},
    "marginstream_producer_failures_total": {"kind", "operation"},
    "marginstream_changelog_records_read_total": {"partition"},
    "marginstream_changelog_records_applied_total": {"partition"},
    "marginstream_record_processing_seconds_bucket": {"le"},
    "marginstream_record_processing_seconds_sum": set(),
    "marginstream_record_processing_seconds_count": set(),
    "marginstream_engine_loads_total": set(),
    "marginstream_partitions_open": set(),
    "marginstream_partitions_restoring": set(),
    "marginstream_restore_remaining_offsets": {"partition"},
    "marginstream_consumer_lag": {"topic", "partition"},
    "marginstream_worker_status": {"status"},
    "marginstream_commit_pending_seconds": {"partition"},
    "marginstream_commit_delay_seconds": {"partition"},
    "marginstream_insurance_fund_balance": {"partition"},
    "marginstream_insurance_fund_uncovered": {"partition"},
    "marginstream_accounts_by_level": {"partition", "level"},
    "marginstream_accounts_by_margin_ratio": {"partition", "ratio"},
    "marginstream_liquidations_open": {"partition"},
}
SEVERITIES = {"critical", "warning"}


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(
            "promtool is not installed: run `make system-packages` (.ci/system-packages "
            "installs Debian's prometheus package, which has it)",
            pytrace=False,
        )
    return path


def _run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [_promtool(), *map(str, args)],
        check=False,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, f"promtool {args}:\n{result.stdout}\n{result.stderr}"
    return result


def _alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


# -- promtool ---------------------------------------------------------------------------


def test_promtool_checks_the_rules():
    _run("check", "rules", RULES)


def test_promtool_unit_tests_of_the_rules_pass():
    _run("test", "rules", RULES_TEST)


def test_promtool_checks_the_config(tmp_path: Path):
    """promtool check config insists the credentials file exists, and it is a compose
    secret (/run/secrets/web-token): the config is checked as a copy that names a file
    here instead, with the rules beside it (its rule_files are relative)."""
    config = CONFIG.read_text()
    secret = yaml.safe_load(config)["scrape_configs"][0]["authorization"]["credentials_file"]
    assert config.count(secret) == 1
    token = tmp_path / "web.token"
    token.write_text("a-token\n")
    (tmp_path / "prometheus.yml").write_text(config.replace(secret, str(token)))
    for rule_file in yaml.safe_load(config)["rule_files"]:
        shutil.copy(PROMETHEUS / rule_file, tmp_path / rule_file)
    result = _run("check", "config", tmp_path / "prometheus.yml")
    assert "1 rule files found" in result.stdout + result.stderr


def test_dashboard_queries_are_promql(tmp_path: Path):
    """Prometheus's own parser on every panel query: each as a recording rule for
    `promtool check rules`, with Grafana's interval variables made durations."""
    rules = [
        {"record": f"dashboard:query_{n}", "expr": re.sub(r"\$\{?__\w+\}?", "1m", expr)}
        for n, (where, expr) in enumerate(expressions())
        if where.startswith(DASHBOARD.name)
    ]
    assert rules
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    _run("check", "rules", path)


# -- the rules and their tests ---------------------------------------------------------


def test_every_alert_has_a_severity_a_summary_and_a_runbook():
    alerts = _alerts()
    assert len(alerts) >= 10
    assert len({a["alert"] for a in alerts}) == len(alerts)
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("labels", {}).get("severity") in SEVERITIES, name
        annotations = alert.get("annotations", {})
        for key in ("summary", "runbook"):
            text = annotations.get(key, "")
            assert text.strip() and "\n" not in text, (name, key)  # one line


def test_every_alert_is_tested_firing_and_silent():
    """For each alert of rules.yml, rules_test.yml has a case that fires (an expected
    alert) and one that must not (no alert expected); and names no other alert."""
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["rule_files"] == [RULES.name]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    names = {alert["alert"] for alert in _alerts()}
    firing = {c["alertname"] for c in cases if c.get("exp_alerts")}
    silent = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    assert names - firing == set(), "no case where these fire"
    assert names - silent == set(), "no case where these stay silent"
    assert {c["alertname"] for c in cases} <= names
    for case in cases:  # an expected alert carries the severity and both annotations
        for expected in case.get("exp_alerts") or []:
            assert expected["exp_labels"].get("severity") in SEVERITIES, case["alertname"]
            assert set(expected["exp_annotations"]) == {"summary", "runbook"}, case


def test_rule_tests_evaluate_as_prometheus_does():
    config = yaml.safe_load(CONFIG.read_text())
    tests = yaml.safe_load(RULES_TEST.read_text())
    assert tests["evaluation_interval"] == config["global"]["evaluation_interval"]
    assert config["rule_files"] == [RULES.name]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "marginstream"
    assert job.get("scrape_interval", config["global"]["scrape_interval"]) == "5s"


# -- the dashboard ----------------------------------------------------------------------


def test_the_dashboard_has_a_uid_a_title_and_unique_panels():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_panels_fit_the_grid_without_overlapping():
    """Grafana's grid is 24 columns wide; panels that overlap are pushed around."""
    taken: dict[tuple[int, int], str] = {}
    for panel in panels(_dashboard()):
        grid = panel["gridPos"]
        assert min(grid["h"], grid["w"]) > 0 and min(grid["x"], grid["y"]) >= 0, panel
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, (panel["title"], taken[(x, y)])
                taken[(x, y)] = panel["title"]


def test_every_panel_queries_the_provisioned_prometheus():
    datasources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    (source,) = datasources["datasources"]
    expected = {"type": source["type"], "uid": source["uid"]}
    shown = [p for p in panels(_dashboard()) if p["type"] != "row"]
    assert len(shown) >= 15
    for panel in shown:
        title = panel.get("title")
        assert title and "gridPos" in panel, panel
        assert panel.get("datasource") == expected, title
        targets = panel.get("targets")
        assert targets, title
        refs = [target.get("refId") for target in targets]
        assert all(refs) and len(refs) == len(set(refs)), title
        for target in targets:
            assert target.get("expr", "").strip(), (title, target)
            assert target.get("datasource", expected) == expected, (title, target)


def test_the_dashboard_provider_loads_it():
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "marginstream.yaml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"]  # compose mounts DASHBOARD's folder there


# -- what the queries select ------------------------------------------------------------


def test_every_query_names_only_exported_metrics_and_their_labels():
    """Every rule and panel: each selector a metric the workers export, with labels it
    has (job and instance: Prometheus's, on every scraped series)."""
    problems = []
    for where, expr in expressions():
        for name, labels in selectors(expr):
            if name not in METRICS:
                problems.append(f"{where}: unknown metric {name}")
            elif unknown := labels - METRICS[name] - TARGET_LABELS:
                problems.append(f"{where}: {name} has no label {sorted(unknown)}")
    assert not problems, "\n".join(problems)


def test_the_documented_metrics_are_all_shown_or_alerted_on():
    used = {name for _, expr in expressions() for name, _ in selectors(expr)}
    not_needed = {  # the quantiles need only the buckets
        "marginstream_record_processing_seconds_sum",
        "marginstream_record_processing_seconds_count",
    }
    assert set(METRICS) - used - not_needed == set()


def test_per_partition_state_is_taken_once_per_partition():
    """A partition is reported by two workers during a rebalance: the gauges of a
    partition's state (fund, accounts, liquidations) are always read through a
    `max by (partition ...)` (or min), so that no sum counts a partition twice."""
    gauge = re.compile(r"marginstream_(insurance_fund_\w+|accounts_by_\w+|liquidations_open)\b")
    once = re.compile(r"(max|min) by \(partition[\w, ]*\) \((\w+_over_time\()?$")
    uses = 0
    for where, expr in expressions():
        for match in gauge.finditer(expr):
            uses += 1
            assert once.search(expr[: match.start()]), (where, expr)
    assert uses >= 10
