"""The docs against the code: every setting the code reads, every metric a worker exports
and every HTTP route it serves is named on some page of docs/; the README stays a short
front door; every relative link in the README and docs/ leads somewhere.

Pure and quick: no broker, nothing started. What the code reads or serves is taken from
the code itself wherever it can be:

- settings: the table of stream/bounds.py, the variables the worker's own start path asks
  its environment for (StreamSettings.from_env with an environment that records what is
  asked, which covers stream/security.py's), and an AST scan of src/ for
  os.environ.get/os.getenv/os.environ[...] (and the like) with a literal name;
- metrics: the families of a worker's registry, StreamMetrics given an idle worker (the
  read-only view of stream/views.py with nothing assigned), so the families made at
  scrape time are there too; an AST scan of src/ for metric constructors with a literal
  name cross-checks it;
- routes: the routes of the real aiohttp application, as stream/worker.create_app builds
  it with the default settings (building it opens no connection: faust's Kafka side and
  the service start only when the app runs).
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from marginstream.core import RiskEngine
from marginstream.core.inputs.envelope import Output
from marginstream.stream import bounds
from marginstream.stream.metrics import StreamMetrics
from marginstream.stream.overviews import Overviews
from marginstream.stream.settings import StreamSettings
from marginstream.stream.worker import create_app

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src" / "marginstream"
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LIMIT = 12 * 1024  # bytes: a front door, the reference lives in docs/

# Metric constructors, and the type of what they make.
METRIC_TYPES = {
    "Counter": "counter",
    "Gauge": "gauge",
    "Histogram": "histogram",
    "Summary": "summary",
    "CounterMetricFamily": "counter",
    "GaugeMetricFamily": "gauge",
    "HistogramMetricFamily": "histogram",
    "SummaryMetricFamily": "summary",
    "InfoMetricFamily": "info",
    "BatchHistogram": "histogram",  # stream/metrics.py's own
}


def pages() -> list[Path]:
    return sorted(DOCS.glob("*.md"))


def docs_text() -> str:
    return "\n".join(page.read_text() for page in pages())


def missing_from_docs(names: set[str], pattern: str) -> set[str]:
    """The names no page of docs/ holds; pattern: a regex with {name}, the escaped name."""
    text = docs_text()
    return {name for name in names if not re.search(pattern.format(name=re.escape(name)), text)}


def python_sources() -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted(SRC.rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


# -- settings ------------------------------------------------------------------------


class RecordingEnv(dict[str, str]):
    """An empty environment that remembers every name asked of it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: set[str] = set()

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self.asked.add(str(key))
        return super().__contains__(key)


def _is_environ(node: ast.expr) -> bool:
    """os.environ, or environ imported from os."""
    return (isinstance(node, ast.Attribute) and node.attr == "environ") or (
        isinstance(node, ast.Name) and node.id == "environ"
    )


def _literal(node: ast.expr | None) -> str | None:
    return node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None


def environment_reads(tree: ast.Module) -> set[str]:
    """Literal names read from the environment: os.environ.get/pop/setdefault("X"),
    os.getenv("X"), os.environ["X"], "X" in os.environ."""
    found: set[str] = set()
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            environ_method = isinstance(func, ast.Attribute) and _is_environ(func.value)
            if called == "getenv" or (environ_method and called in ("get", "pop", "setdefault")):
                name = _literal(node.args[0])
        elif isinstance(node, ast.Subscript) and _is_environ(node.value):
            name = _literal(node.slice)
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], ast.In | ast.NotIn)
            and _is_environ(node.comparators[0])
        ):
            name = _literal(node.left)
        if name is not None:
            found.add(name)
    return found


# A name of our own variables: whatever reads it (a constant, a helper, a branch taken only
# with TLS), the literal is in the source.
OUR_VARIABLE = re.compile(r"(MARGINSTREAM|KAFKA)_[A-Z0-9_]+")


def variable_literals(tree: ast.Module) -> set[str]:
    """Every string literal shaped as one of our variables, outside an __all__ list."""
    exported = {
        id(constant)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets)
        for constant in ast.walk(node.value)
    }
    return {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and OUR_VARIABLE.fullmatch(node.value)
        and id(node) not in exported
    }


def settings_read() -> set[str]:
    env = RecordingEnv()
    StreamSettings.from_env(env)  # the worker's own start path: its table and security.py
    trees = [tree for _, tree in python_sources()]
    scanned = set().union(*(environment_reads(tree) | variable_literals(tree) for tree in trees))
    return {setting.variable for setting in bounds.SETTINGS} | env.asked | scanned


def test_the_environment_scan_sees_literal_reads():
    tree = ast.parse(
        "import os\nfrom os import environ, getenv\n"
        "os.environ.get('A')\nos.getenv('B', 'x')\nos.environ['C']\n'D' in os.environ\n"
        "environ.get('E')\ngetenv('F')\nos.environ.setdefault('G', '1')\nd.get('H')\n"
    )
    assert environment_reads(tree) == set("ABCDEFG")


def test_the_literal_scan_sees_our_names_however_they_are_read():
    tree = ast.parse(
        "RATE = 'MARGINSTREAM_RATE'\nget('KAFKA_SSL_CIPHERS')\n__all__ = ['KAFKA_VERSION']\n"
        "x = 'MARGINSTREAM_'\ny = 'marginstream_alerts'\n"
    )
    assert variable_literals(tree) == {"MARGINSTREAM_RATE", "KAFKA_SSL_CIPHERS"}


def test_every_setting_the_code_reads_is_named_in_docs():
    read = settings_read()
    # The scan and the recording both see something: neither is silently broken.
    assert {"KAFKA_SSL_CAFILE", "MARGINSTREAM_PARTITIONS", "MARGINSTREAM_CACHE"} <= read
    assert missing_from_docs(read, r"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])") == set()


# -- metrics -------------------------------------------------------------------------


class BusyWorker:
    """A worker with one partition open and one restore under way, as /metrics reads it
    (stream/views.py's WorkerView): with every hook of StreamMetrics also called once, its
    registry holds every family, and every label, a running worker can export."""

    def __init__(self) -> None:
        engine = RiskEngine()
        self.partitions = {
            0: SimpleNamespace(
                number=0, active=True, inputs=[], work=SimpleNamespace(engine=engine, records=0),
                transaction=None, applied=0, commits=0, commit_delay=0.0, pending_since=None,
            )
        }  # fmt: skip
        reading = SimpleNamespace(until=2, store=SimpleNamespace(changelog_offset=lambda: 1))
        self.changelog = SimpleNamespace(counts=None, readings={1: reading}, following=list)
        self.names = SimpleNamespace(fanout="app-market", spec=lambda topic: topic)
        self.fanout = SimpleNamespace(copied=0)
        self.overviews = Overviews()
        self.loads = self.fenced = self.reopened = 0

    def status(self) -> str:
        return "ok"

    def failing(self) -> str | None:
        return None


def scraped() -> str:
    """What GET /metrics answers for a busy worker, in the text format."""
    metrics = StreamMetrics(BusyWorker())
    metrics.applied("orders", 1, time.perf_counter())
    metrics.output(Output("liquidations", "a", {"type": "margin_call"}))
    metrics.output(Output("liquidation-orders", "a", {"type": "adl"}))
    metrics.output(Output("dead-letters", None, {"reason": "not JSON"}))
    metrics.failed("send", RuntimeError("a broker away"))
    metrics.restored(1, 1, 1)
    metrics.lag = {("orders", 0): 0}
    return generate_latest(metrics.registry).decode()


def exported_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """name -> (type, label names) of every family a scrape shows, by the names a scraper
    sees: counters with _total, and prometheus_client's _created series."""
    found = {}
    for family in text_string_to_metric_families(scraped()):
        name = f"{family.name}_total" if family.type == "counter" else family.name
        labels = {label for sample in family.samples for label in sample.labels} - {"le"}
        found[name] = (family.type, frozenset(labels))
    return found


def constructed_metrics() -> set[str]:
    """The exported name of every metric src/ constructs with a literal name."""
    found: set[str] = set()
    for _, tree in python_sources():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and node.args):
                continue
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            name = _literal(node.args[0])
            if called in METRIC_TYPES and name is not None:
                counter = METRIC_TYPES[called] == "counter" and not name.endswith("_total")
                found.add(f"{name}_total" if counter else name)
    return found


def test_the_scrape_shows_every_metric_the_code_constructs():
    """The busy worker is not missing a family: each one src/ makes is in its scrape."""
    assert constructed_metrics() - set(exported_metrics()) == set()


def test_every_metric_a_worker_exports_is_named_in_docs():
    exported = exported_metrics()
    assert {"marginstream_records_applied_total", "marginstream_worker_status"} <= set(exported)
    assert missing_from_docs(set(exported), r"(?<![A-Za-z0-9_]){name}(?![A-Za-z0-9_])") == set()


def documented_metrics() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/metrics.md's table: name -> (type, label names). A labels cell is groups split by
    ';', each naming its labels before a ':' (what follows are their values)."""
    rows = {}
    for line in (DOCS / "metrics.md").read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and re.fullmatch(r"`marginstream_\w+`", cells[0]):
            names = set()
            for group in cells[2].split(";"):
                names |= set(re.findall(r"`(\w+)`", group.split(":")[0]))
            rows[cells[0].strip("`")] = (cells[1], frozenset(names))
    return rows


def test_the_metrics_page_gives_each_metric_s_type_and_labels():
    """Every family but prometheus_client's _created series has its row, with the type
    and the labels a scrape shows."""
    documented = documented_metrics()
    wrong = {
        name: (found, documented.get(name))
        for name, found in exported_metrics().items()
        if not name.endswith("_created") and documented.get(name) != found
    }
    assert wrong == {}, "metric: (exported type and labels, the page's row)"


# -- routes --------------------------------------------------------------------------


def served_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route of the worker's web application, built as a
    worker builds it without a web token and with one (a route served only in one of the
    two counts)."""
    routes = set()
    for env in ({}, {"MARGINSTREAM_WEB_TOKEN": "a-token"}):
        app = create_app(StreamSettings.from_env(env))
        for route in app.web.web_app.router.routes():
            if route.method != "HEAD":  # aiohttp adds one to every GET; http.md says so
                routes.add((route.method, route.resource.canonical))
    return routes


def documented_routes() -> set[tuple[str, str]]:
    """The routes docs/http.md's table lists, as `GET /path` in its first column."""
    text = (DOCS / "http.md").read_text()
    return set(re.findall(r"^\| `([A-Z]+) (/\S*)` \|", text, re.M))


def test_the_http_page_lists_exactly_the_routes_a_worker_serves():
    """Named in the table of docs/http.md, by method and path: a path mentioned in passing
    elsewhere (/accounts/ as the token's prefix) does not count, and a row the worker does
    not serve is a page out of date."""
    served = served_routes()
    assert {("GET", "/health/"), ("GET", "/accounts/{account}/"), ("GET", "/metrics")} <= served
    assert documented_routes() == served


# -- the README and the links --------------------------------------------------------


def test_the_readme_is_at_most_12_kib():
    assert len(README.read_bytes()) <= README_LIMIT


FENCE = re.compile(r"^\s*(```|~~~)")
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(path: Path) -> Iterator[str]:
    """The lines of a Markdown file outside code fences."""
    fenced = False
    for line in path.read_text().splitlines():
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (code and link text kept, emphasis and
    markup dropped), lower-case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in prose(path):
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            name, n = base, 0
            while name in found:  # GitHub numbers repeated headings
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def broken_links(path: Path) -> list[str]:
    broken = []
    for line in prose(path):
        text = re.sub(r"`[^`]*`", "", line)  # code spans are not links
        for target in LINK.findall(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            linked = (path.parent / file_part).resolve() if file_part else path
            if not linked.exists():
                broken.append(f"{target}: no such file")
                continue
            if anchor and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{target}: no such heading in {linked.name}")
    return broken


def test_every_relative_link_leads_somewhere():
    broken = {
        str(path.relative_to(ROOT)): found
        for path in [README, *pages()]
        if (found := broken_links(path))
    }
    assert broken == {}


def test_the_slug_rule():
    assert slug("The commit protocol (`stream/commit.py`)") == "the-commit-protocol-streamcommitpy"
    assert slug("`MARGINSTREAM_FAULT`, for crash tests") == "marginstream_fault-for-crash-tests"
    assert slug("`GET /adl/{symbol}/`") == "get-adlsymbol"


# A source file named in the docs, as `core/risk/view.py` or `src/marginstream/stream/web.py`.
SOURCE_PATH = re.compile(
    r"(?<![\w/.])(?:src/marginstream/)?((?:core|stream|cli|feeds|localbroker)/[\w/]+\.py)"
)


def test_every_source_file_the_docs_name_exists():
    """Modules move (core/ was regrouped into sub-packages): a page must not send a reader
    to a file that is gone. BENCHMARKS.md is left out: it records what was measured
    then, in the paths of then."""
    package = ROOT / "src" / "marginstream"
    gone = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in [README, *pages()]
        for name in SOURCE_PATH.findall(path.read_text())
        if not (package / name).exists()
    }
    assert gone == set()
