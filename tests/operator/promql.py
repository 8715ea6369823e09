"""What the operator's PromQL selects: the metrics and labels of the alert rules and the
dashboard, for the checks that they name only what a worker exports.

selectors(expr) parses one expression (a small recursive-descent parser after Prometheus's
grammar: operator precedence, vector matching, aggregations with their clause before or
after the arguments, ranges, subqueries, offset and @) and returns each vector selector's
metric name with the label names the expression uses on it:

- the label names of its own matchers, `{partition="3", status=~"ok|failed"}`;
- those of every `by (...)`/`without (...)` of an aggregation around it;
- those of every `on (...)`/`ignoring (...)` of a binary operation it is an operand of,
  and the extra labels of `group_left (...)` for the right side (the "one" side they are
  copied from), of `group_right (...)` for the left side.

Out of scope: label names that only appear inside strings, e.g. the source and
destination labels of label_replace/label_join or count_values' output label (they are
string arguments, skipped like every string); a selector without a fixed metric name
(`{__name__=~"..."}`) is refused, not guessed. Function names, aggregation operators,
keywords (by, without, on, ignoring, group_left, group_right, bool, and, or, unless,
atan2, offset), numbers, durations, strings and Grafana's variables ($__rate_interval,
${var}, [[var]]) are never metrics.

expressions() lists (where, expr) for every rule of docker/prometheus/rules.yml and
every panel target of docker/grafana/dashboards/marginstream.json (rows and nested panels
walked).

A worker does not export `job` and `instance`: Prometheus adds them to every series it
scrapes (TARGET_LABELS), so a check against a live worker's /metrics allows them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent
RULES = ROOT / "docker" / "prometheus" / "rules.yml"
DASHBOARD = ROOT / "docker" / "grafana" / "dashboards" / "marginstream.json"

TARGET_LABELS = frozenset({"job", "instance"})  # added by the scrape, not by the worker

AGGREGATIONS = frozenset(
    {
        "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
        "bottomk", "topk", "quantile", "limitk", "limit_ratio",
    }
)  # fmt: skip
# Binary operators by precedence, lowest first; ^ alone is right-associative.
PRECEDENCE = {
    "or": 1,
    "and": 2, "unless": 2,
    "==": 3, "!=": 3, "<=": 3, "<": 3, ">=": 3, ">": 3,
    "+": 4, "-": 4,
    "*": 5, "/": 5, "%": 5, "atan2": 5,
    "^": 6,
}  # fmt: skip
KEYWORDS = frozenset(
    {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset",
     "and", "or", "unless", "atan2"}
)  # fmt: skip

_UNIT = r"(?:ms|[smhdwy])"
_TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_]\w*|\[\[[A-Za-z_][\w:]*\]\])
  | (?P<duration>(?:\d+"""
    + _UNIT
    + r""")+(?!\w))
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?!\w))
  | (?P<name>[A-Za-z_][A-Za-z0-9_:]*)  # not from a colon: a subquery step [5m:1m]
  | (?P<op>==|!=|>=|<=|=~|!~|[-+*/%^<>=@])
  | (?P<punct>[(){}\[\],:])
    """,
    re.VERBOSE,
)


class PromQLError(ValueError):
    """An expression this parser cannot read (or a selector with no fixed name)."""


@dataclass
class _Token:
    kind: str
    text: str
    at: int


def _tokens(expr: str) -> list[_Token]:
    tokens, at = [], 0
    while at < len(expr):
        match = _TOKEN.match(expr, at)
        if match is None:
            raise PromQLError(f"unexpected {expr[at]!r} at {at} in {expr!r}")
        kind = match.lastgroup
        assert kind is not None
        if kind != "space":
            text = match.group()
            if kind == "name" and text.lower() in {"inf", "nan"}:
                kind = "number"
            tokens.append(_Token(kind, text, at))
        at = match.end()
    tokens.append(_Token("end", "", len(expr)))
    return tokens


# -- the tree: only what decides which labels reach which selector ------------------


@dataclass
class _Node:
    children: list[_Node] = field(default_factory=list)


@dataclass
class _Selector(_Node):
    name: str = ""
    labels: set[str] = field(default_factory=set)


@dataclass
class _Aggregate(_Node):
    grouping: set[str] = field(default_factory=set)


@dataclass
class _Binary(_Node):
    matching: set[str] = field(default_factory=set)  # on/ignoring
    left_extra: set[str] = field(default_factory=set)  # group_right's labels
    right_extra: set[str] = field(default_factory=set)  # group_left's labels


class _Parser:
    def __init__(self, expr: str) -> None:
        self.expr = expr
        self.tokens = _tokens(expr)
        self.at = 0

    # tokens

    @property
    def token(self) -> _Token:
        return self.tokens[self.at]

    def next(self) -> _Token:
        token = self.tokens[self.at]
        self.at += 1
        return token

    def is_(self, text: str) -> bool:
        token = self.token
        if token.kind == "name":
            return token.text.lower() == text
        return token.kind in {"op", "punct"} and token.text == text

    def expect(self, text: str) -> _Token:
        if not self.is_(text):
            self.fail(f"expected {text!r}")
        return self.next()

    def fail(self, message: str) -> None:
        token = self.token
        found = repr(token.text) if token.kind != "end" else "the end"
        raise PromQLError(f"{message}, found {found} at {token.at} in {self.expr!r}")

    # grammar

    def parse(self) -> _Node:
        node = self.expression(1)
        if self.token.kind != "end":
            self.fail("expected an operator or the end")
        return node

    def binary_operator(self) -> str | None:
        token = self.token
        text = token.text.lower() if token.kind == "name" else token.text
        if token.kind in {"op", "name"} and text in PRECEDENCE:
            return text
        return None

    def expression(self, lowest: int) -> _Node:
        left = self.unary()
        while (op := self.binary_operator()) is not None and PRECEDENCE[op] >= lowest:
            self.next()
            node = _Binary(children=[left])
            if self.is_("bool"):
                self.next()
            if self.is_("on") or self.is_("ignoring"):
                self.next()
                node.matching = self.label_list()
                for side in ("group_left", "group_right"):
                    if self.is_(side):
                        self.next()
                        extra = self.label_list() if self.is_("(") else set()
                        if side == "group_left":
                            node.right_extra = extra
                        else:
                            node.left_extra = extra
            precedence = PRECEDENCE[op]
            node.children.append(self.expression(precedence if op == "^" else precedence + 1))
            left = node
        return left

    def unary(self) -> _Node:
        if self.is_("-") or self.is_("+"):
            self.next()
            return _Node(children=[self.expression(PRECEDENCE["^"])])
        return self.postfix(self.primary())

    def postfix(self, node: _Node) -> _Node:
        while True:
            if self.is_("["):  # a range, or a subquery [range:step]
                self.next()
                self.duration()
                if self.is_(":"):
                    self.next()
                    if not self.is_("]"):
                        self.duration()
                self.expect("]")
            elif self.is_("offset"):
                self.next()
                if self.is_("-") or self.is_("+"):
                    self.next()
                self.duration()
            elif self.is_("@"):
                self.next()
                if self.is_("start") or self.is_("end"):
                    self.next()
                    self.expect("(")
                    self.expect(")")
                elif self.token.kind in {"number", "variable"}:
                    self.next()
                else:
                    self.fail("expected a time after @")
            else:
                return node

    def duration(self) -> None:
        if self.token.kind not in {"duration", "number", "variable"}:
            self.fail("expected a duration")
        self.next()

    def primary(self) -> _Node:
        token = self.token
        if token.kind in {"number", "string", "variable", "duration"}:
            self.next()
            return _Node()
        if self.is_("("):
            self.next()
            node = self.expression(1)
            self.expect(")")
            return _Node(children=[node])
        if self.is_("{"):
            return self.selector(None)
        if token.kind != "name":
            self.fail("expected an expression")
        word = token.text.lower()
        if word in AGGREGATIONS and self.tokens[self.at + 1].text.lower() in {
            "(", "by", "without",
        }:  # fmt: skip
            return self.aggregate()
        if word in KEYWORDS:
            self.fail("expected an expression")
        if self.tokens[self.at + 1].text == "(":
            self.next()
            return _Node(children=self.arguments())
        return self.selector(self.next().text)

    def aggregate(self) -> _Node:
        self.next()
        node = _Aggregate()
        if self.is_("by") or self.is_("without"):
            self.next()
            node.grouping = self.label_list()
        node.children = self.arguments()
        if self.is_("by") or self.is_("without"):
            self.next()
            node.grouping |= self.label_list()
        return node

    def arguments(self) -> list[_Node]:
        self.expect("(")
        arguments = []
        while not self.is_(")"):
            arguments.append(self.expression(1))
            if not self.is_(","):
                break
            self.next()
        self.expect(")")
        return arguments

    def label_list(self) -> set[str]:
        self.expect("(")
        labels = set()
        while self.token.kind == "name":
            labels.add(self.next().text)
            if not self.is_(","):
                break
            self.next()
        self.expect(")")
        return labels

    def selector(self, name: str | None) -> _Selector:
        labels: set[str] = set()
        if self.is_("{"):
            self.next()
            while self.token.kind == "name":
                label = self.next().text
                if self.token.text not in {"=", "!=", "=~", "!~"}:
                    self.fail("expected a label matcher's operator")
                op = self.next().text
                if self.token.kind not in {"string", "variable"}:
                    self.fail("expected a string")
                value = self.next().text
                if label == "__name__":
                    if op != "=" or name is not None:
                        self.fail("a metric name matcher other than one equality")
                    name = _unquote(value)
                else:
                    labels.add(label)
                if not self.is_(","):
                    break
                self.next()
            self.expect("}")
        if not name:
            self.fail("a selector without a fixed metric name")
        return _Selector(name=name, labels=labels)


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _walk(node: _Node, around: frozenset[str]) -> Iterator[tuple[str, set[str]]]:
    if isinstance(node, _Selector):
        yield node.name, node.labels | around
        return
    if isinstance(node, _Aggregate):
        around = around | node.grouping
    if isinstance(node, _Binary):
        left, right = node.children
        yield from _walk(left, around | node.matching | node.left_extra)
        yield from _walk(right, around | node.matching | node.right_extra)
        return
    for child in node.children:
        yield from _walk(child, around)


def selectors(expr: str) -> list[tuple[str, set[str]]]:
    """Every vector selector of expr, in order: (metric name, label names used on it).
    PromQLError for what is not PromQL (or is out of this parser's scope)."""
    return list(_walk(_Parser(expr).parse(), frozenset()))


def expressions(rules: Path = RULES, dashboard: Path = DASHBOARD) -> list[tuple[str, str]]:
    """(where, expr) for every rule in rules and every panel target in dashboard."""
    found = []
    for group in yaml.safe_load(rules.read_text())["groups"]:
        for rule in group["rules"]:
            kind = "alert" if "alert" in rule else "record"
            found.append((f"{rules.name}: {kind} {rule[kind]}", rule["expr"]))
    for panel in panels(json.loads(dashboard.read_text())):
        for target in panel.get("targets", []):
            where = f"{dashboard.name}: panel {panel.get('title')!r} target {target.get('refId')}"
            found.append((where, target.get("expr", "")))
    return found


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel of a dashboard: top level, inside collapsed rows, and in the rows of
    the old schema (dashboard["rows"])."""
    stack = [*dashboard.get("panels", []), *dashboard.get("rows", [])][::-1]
    while stack:
        panel = stack.pop()
        if "type" in panel:  # an old-schema row has none, and is no panel
            yield panel
        stack.extend(panel.get("panels", [])[::-1])
