"""selectors() and expressions() of promql.py, on tricky expressions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.operator.promql import PromQLError, expressions, panels, selectors


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ('up{job="marginstream"} == 0', [("up", {"job"})]),
        # function names, numbers and the histogram's le
        (
            "histogram_quantile(0.99, sum by (le) "
            "(rate(marginstream_record_processing_seconds_bucket[$__rate_interval])))",
            [("marginstream_record_processing_seconds_bucket", {"le"})],
        ),
        # an aggregation's clause before or after its argument, several matchers
        (
            'sum(rate(a_total{kind="fenced", operation!~"send|close"}[5m])) by (instance)',
            [("a_total", {"kind", "operation", "instance"})],
        ),
        # nested aggregations: every enclosing clause reaches the selector
        (
            "sum by (level) (max by (partition, level) (m))",
            [("m", {"partition", "level"})],
        ),
        ("sum without (instance) (m)", [("m", {"instance"})]),
        # on/ignoring reach both operands; group_left's labels come from the right side
        (
            'a / on (partition) group_left (owner) b{x="1"}',
            [("a", {"partition"}), ("b", {"partition", "owner", "x"})],
        ),
        (
            "a * ignoring (status) group_right (team) b",
            [("a", {"status", "team"}), ("b", {"status"})],
        ),
        ("a and on () b", [("a", set()), ("b", set())]),
        # precedence: on() belongs to the division, not to the addition
        ("a + b / on (p) c", [("a", set()), ("b", {"p"}), ("c", {"p"})]),
        ("(a + b) / on (p) c", [("a", {"p"}), ("b", {"p"}), ("c", {"p"})]),
        # keywords and set operators are not metrics; bool after a comparison
        ("a > bool 3 or b unless c", [("a", set()), ("b", set()), ("c", set())]),
        ("a atan2 b", [("a", set()), ("b", set())]),
        # metrics whose names look like keywords or functions
        (
            "bool_metric + rate_total + by_x",
            [("bool_metric", set()), ("rate_total", set()), ("by_x", set())],
        ),
        # ranges, subqueries, offset (also negative), @, durations of several units
        (
            "max_over_time(m[5m:30s] offset -1h30m @ start()) - min_over_time(n[1d] @ 1700000000)",
            [("m", set()), ("n", set())],
        ),
        ("rate(m[5m:])", [("m", set())]),
        # strings are never labels or metrics: label_replace's labels are out of scope
        ('label_replace(up, "dst", "$1", "src", "(.*)")', [("up", set())]),
        ('count_values("value", m)', [("m", set())]),
        # a quoted metric name in __name__, a trailing comma, an escaped quote
        ('{__name__="m", a="x\\"y",}', [("m", {"a"})]),
        ("{__name__=`m`}", [("m", set())]),
        # numbers of every form, unary minus, no selector at all
        ("-(1e3 + 0x1F) * .5 + Inf - NaN", []),
        ("time() - vector(1)", []),
        # aggregation keywords in any case; a comment
        ("SUM BY (p) (m) # the total", [("m", {"p"})]),
        # recording-rule names with colons
        ("job:m:rate5m{job='x'}", [("job:m:rate5m", {"job"})]),
        # the same metric twice, each selector on its own; `or on` reaches both sides
        (
            'm{status="recovering"} + 2 * m{status="failed"} or on (instance) 3 * (up == 0)',
            [("m", {"status", "instance"}), ("m", {"status", "instance"}), ("up", {"instance"})],
        ),
        # topk's parameter, quantile's
        ("topk(3, m) + quantile(0.9, n)", [("m", set()), ("n", set())]),
        # Grafana's variables: in ranges, in strings
        ('rate(m{instance=~"$instance"}[${__rate_interval}])', [("m", {"instance"})]),
        ("rate(m[[[interval]]])", [("m", set())]),
    ],
)
def test_selectors(expr: str, expected: list[tuple[str, set[str]]]):
    assert selectors(expr) == expected


@pytest.mark.parametrize(
    "expr",
    [
        "sum(",
        "rate(m[5m]",
        "a +",
        "a b",
        "by",
        "m{a=}",
        'm{a~"x"}',
        '{a="x"}',  # no metric name
        '{__name__=~"m.*"}',  # no fixed metric name
        'm{__name__="n"}',  # two names
        "m[5m",
        "m offset",
        "m @",
        "m{a='x'",
        "m ? n",
    ],
)
def test_what_is_not_promql_is_refused(expr: str):
    with pytest.raises(PromQLError):
        selectors(expr)


def test_expressions_walk_rules_and_every_panel(tmp_path: Path):
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n"
        "  - name: g\n"
        "    rules:\n"
        "      - record: job:m:sum\n"
        "        expr: sum(m)\n"
        "      - alert: A\n"
        "        expr: up == 0\n"
    )
    dashboard = tmp_path / "dashboard.json"
    dashboard.write_text(
        json.dumps(
            {
                "panels": [
                    {
                        "type": "timeseries",
                        "title": "top",
                        "targets": [{"refId": "A", "expr": "a"}],
                    },
                    {"type": "row", "title": "open row", "panels": []},
                    {
                        "type": "row",
                        "title": "collapsed",
                        "collapsed": True,
                        "panels": [
                            {
                                "type": "stat",
                                "title": "inner",
                                "targets": [
                                    {"refId": "A", "expr": "b"},
                                    {"refId": "B", "expr": "c"},
                                ],
                            },
                        ],
                    },
                    {"type": "text", "title": "no targets"},
                ],
                "rows": [  # the old schema
                    {
                        "title": "old",
                        "panels": [
                            {
                                "type": "graph",
                                "title": "legacy",
                                "targets": [{"refId": "A", "expr": "d"}],
                            }
                        ],
                    },
                ],
            }
        )
    )
    assert expressions(rules, dashboard) == [
        ("rules.yml: record job:m:sum", "sum(m)"),
        ("rules.yml: alert A", "up == 0"),
        ("dashboard.json: panel 'top' target A", "a"),
        ("dashboard.json: panel 'inner' target A", "b"),
        ("dashboard.json: panel 'inner' target B", "c"),
        ("dashboard.json: panel 'legacy' target A", "d"),
    ]
    titles = [p["title"] for p in panels(json.loads(dashboard.read_text()))]
    assert titles == ["top", "open row", "collapsed", "inner", "no targets", "legacy"]


def test_expressions_of_the_repository_cover_every_rule_and_target():
    found = expressions()
    assert sum(where.startswith("rules.yml: alert ") for where, _ in found) >= 10
    assert sum(where.startswith("marginstream.json: ") for where, _ in found) >= 15
    for where, expr in found:
        assert selectors(expr), where  # each selects at least one metric
