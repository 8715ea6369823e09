"""The operator's view on the real broker, during the demo's crash: two workers with a
token, the demo's accounts (and fund capital, an account whose id is markup and one whose
id holds a right-to-left override) down the demo's index fall.

- /risk/summary, gathered by either worker, equals the same overview made from the
  replay's engines (core/outputs/overview.py), and its nearest accounts' figures are what
  GET /accounts/{id}/ and the replay say;
- the page, in Debian's Chromium driven by Selenium, shows "unauthorized" and no data
  without the token, then the fund, the ADL queue and the nearest table the JSON says,
  and follows a further fall that liquidates more accounts; the markup id stays text;
- /metrics carries the new figures, Prometheus scrapes them with the token, and every
  expression of the alert rules and the dashboard names a metric a live worker exports,
  with labels it has;
- a frozen worker costs 40 summaries asked at once 2 s, not their answer;
- the harness's final checks against the replay.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from marginstream.core import EngineConfig
from marginstream.core.outputs.overview import merged, partition_overview
from marginstream.core.shards import Shards
from marginstream.feeds.demo import START_MS, DemoMarket, demo_events
from marginstream.localbroker import free_port
from tests.stream.harness import Deployment, Reference, final_checks, wait_settled
from tests.stream.test_liquidation import replayed

TOKEN = "risk-page-token"
HOSTILE = "<img src=x onerror=\"document.title='pwned'\">"
SPOOF = "!\u202e10000-tcca"  # a right-to-left override: would read "!acct-00001"
SCREENSHOT = os.environ.get("MARGINSTREAM_SCREENSHOT")  # where to save the page's picture
ROOT = Path(__file__).resolve().parents[2]


def stages() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo's records to the middle of its fall (52,500), and on to its bottom
    (45,000), with fund capital on each partition and a leveraged account whose id is
    markup."""
    records = list(demo_events(DemoMarket()))
    index = [
        n for n, r in enumerate(records)
        if r["topic"] == "prices" and r["value"].get("type") == "index"
    ]  # fmt: skip
    middle, bottom = index[5] + 3, index[10] + 3  # each step: index, then its marks
    start = START_MS  # the demo's first event time
    capital = [
        {"topic": "transfers", "key": "insurance-fund", "partition": p,
         "value": {"type": "deposit", "transfer_id": f"capital-{p}",
                   "account": "insurance-fund", "amount": f"{25000 * (p + 1)}", "ts": start}}
        for p in range(4)
    ]  # fmt: skip
    symbol = next(
        r["key"] for r in records
        if r["topic"] == "instruments" and r["value"].get("kind") == "perpetual"
    )  # fmt: skip
    hostile = []
    for n, account in enumerate((HOSTILE, SPOOF)):
        hostile += [
            {"topic": "transfers", "key": account, "value": {"type": "deposit",
             "transfer_id": f"hostile-d{n}", "account": account, "amount": "6000", "ts": start}},
            *({"topic": "orders", "key": who, "value": {"type": "fill",
               "fill_id": f"hostile-{n}-{side}", "account": who, "symbol": symbol,
               "side": side, "qty": "1", "price": "60000", "ts": start}}
              for who, side in ((account, "buy"), ("mm", "sell"))),
        ]  # fmt: skip
    opened = index[0] + 1
    first = records[:opened] + capital + hostile + records[opened:middle]
    return first, records[middle:bottom]


@dataclass
class Crash:
    deployment: Deployment
    records: list[dict[str, Any]]
    workers: list[Any] = field(default_factory=list)

    def engines(self) -> Shards:
        shards, _ = replayed(self.records, self.deployment.partitions)
        return shards


@pytest.fixture(scope="module")
def crash(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crash]:
    deployment = Deployment(kafka_bootstrap, tmp_path_factory.mktemp("risk-page"))
    deployment.extra_env = {"MARGINSTREAM_WEB_TOKEN": TOKEN}
    first, _ = stages()
    workers = [deployment.worker(name).start() for name in ("w1", "w2")]
    for worker in workers:
        worker.wait_ready()
    deployment.produce(first)
    deployment.wait_applied()
    wait_settled(deployment)
    try:
        yield Crash(deployment, first, workers)
    finally:
        deployment.stop_all()


def expected(shards: Shards) -> dict[str, Any]:
    return merged({p: partition_overview(e) for p, e in enumerate(shards.engines)})


def summary_of(worker: Any) -> dict[str, Any]:
    status, body = worker.get("/risk/summary")
    assert status == 200, body
    return body


def test_the_summary_is_the_replay_s_from_either_worker(crash: Crash):
    want = expected(crash.engines())
    assert want["levels"]["liquidation"] > 0 and want["closing"]["open"] > 0
    assert {HOSTILE, SPOOF} <= {entry["account"] for entry in want["nearest"]}
    for worker in crash.workers:
        assert worker.get("/risk/summary", headers={})[0] == 401
        body = summary_of(worker)
        assert body["missing"] == [] and body["partitions_total"] == 4
        for key in ("levels", "ratios", "nearest", "closing", "fund", "adl"):
            assert body[key] == want[key], key
        assert sorted(p["partition"] for p in body["partitions"]) == [0, 1, 2, 3]
        assert {w["url"] for w in body["workers"]} == {w.url for w in crash.workers}
        assert all(w["status"] == "ok" for w in body["workers"])
    # As the other JSON views show the fund and the queues.
    status, fund = crash.workers[0].get("/insurance-fund/")
    assert status == 200 and (fund["balance"], fund["uncovered"]) == (
        body["fund"]["balance"],
        body["fund"]["uncovered"],
    )
    for symbol, sides in body["adl"].items():
        status, ranking = crash.workers[0].get(f"/adl/{symbol}/?limit=5")
        assert status == 200
        for side, entries in sides.items():
            untagged = [{k: v for k, v in e.items() if k != "partition"} for e in entries]
            assert untagged == ranking[side], (symbol, side)
    for entry in body["nearest"][:10]:  # as the account's own view shows it
        status, account = crash.workers[0].get(
            f"/accounts/{urllib.parse.quote(entry['account'], safe='')}/"
        )
        assert status == 200
        assert (entry["ratio"], entry["equity"], entry["level"]) == (
            account["margin_ratio"],
            account["equity"],
            account["level"],
        )
    # The page itself holds no data: served without the token, scripts only its own.
    with urllib.request.urlopen(f"{crash.workers[0].url}/risk/", timeout=10) as answer:
        assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/html")
        policy = answer.headers["Content-Security-Policy"]
        assert "script-src 'sha256-" in policy and "unsafe-inline" not in policy.split(";")[1]
        assert TOKEN not in answer.read().decode()


# -- the page in a real browser ------------------------------------------------------


def browser() -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for path in ("/usr/bin/chromium", "/usr/bin/chromedriver"):
        assert Path(path).exists(), (
            f"{path} is missing: `make test` installs it (.ci/system-packages)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--no-first-run", "--window-size=1400,1000",
    ):  # fmt: skip
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def text(driver: Any, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector).text


def rows(driver: Any, body: str, cells: tuple[str, ...]) -> list[tuple[str, ...]]:
    """A table's rows as the page shows them: the text of each named cell."""
    script = """
        const [body, cells] = arguments;
        return [...document.querySelectorAll(`#${body} tr`)].map(
            row => cells.map(c => (row.querySelector(`.${c}`) || {textContent: ""}).textContent));
    """
    return [tuple(row) for row in driver.execute_script(script, body, list(cells))]


def polls(driver: Any) -> int:
    from selenium.webdriver.common.by import By

    return int(driver.find_element(By.ID, "updated").get_attribute("data-polls") or 0)


def shown_id(account: str) -> str:
    """An id as the page writes it: bidi, format and control characters as code points."""
    return re.sub(
        "[\u0000-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e"
        "\u2060-\u206f\ufeff\ufff9-\ufffb]",
        lambda m: f"<U+{ord(m.group()):04X}>",
        account,
    )


def assert_page_is(driver: Any, body: dict[str, Any]) -> None:
    """The page shows what the JSON says: fund, levels, ADL queue, nearest table."""
    fund = body["fund"]
    assert text(driver, "#fund-balance") == fund["balance"]
    assert text(driver, "#fund-uncovered") == fund["uncovered"]
    for level, count in body["levels"].items():
        assert text(driver, f"#levels-{level}") == str(count)
    assert text(driver, "#closing-open") == str(body["closing"]["open"])
    shown = rows(driver, "nearest", ("account", "ratio", "level", "equity", "maintenance"))
    assert shown == [
        (shown_id(e["account"]), e["ratio"], e["level"], e["equity"], e["maintenance"])
        for e in body["nearest"]
    ]
    queue = driver.execute_script(
        """return [...document.querySelectorAll('#adl tr[data-account]')].map(row =>
            [row.dataset.symbol, row.dataset.side, row.dataset.account,
             row.querySelector('.qty').textContent, row.querySelector('.score').textContent]);"""
    )
    assert sorted(map(tuple, queue)) == sorted(
        (symbol, side, e["account"], e["qty"], e["score"])
        for symbol, sides in body["adl"].items()
        for side, entries in sides.items()
        for e in entries
    )


def test_the_page_in_a_real_browser_shows_and_follows_the_crash(crash: Crash):
    from selenium.webdriver.common.by import By

    worker = crash.workers[1]
    driver = browser()
    try:
        driver.get(f"{worker.url}/risk/")
        wait_for("unauthorized", lambda: text(driver, "#status") == "unauthorized")
        assert text(driver, "#fund-balance") in ("", "—")
        assert not driver.find_elements(By.CSS_SELECTOR, "#nearest tr")
        driver.find_element(By.ID, "token").send_keys(TOKEN)
        driver.find_element(By.ID, "connect").click()
        wait_for("live", lambda: text(driver, "#status") == "live" and polls(driver) >= 1)
        want = expected(crash.engines())
        body = summary_of(worker)
        wait_for("the page to catch up", lambda: polls(driver) >= 3)
        assert_page_is(driver, body)
        for key in ("fund", "adl", "nearest", "levels", "closing"):
            assert body[key] == want[key], key
        hostile = driver.find_elements(By.CSS_SELECTOR, "#nearest tr")
        assert any(HOSTILE in row.text for row in hostile)  # as text, not as an element
        assert any("!<U+202E>10000-tcca" in row.text for row in hostile)  # not obeyed
        assert driver.title != "pwned" and not driver.find_elements(By.CSS_SELECTOR, "img")

        # A further fall liquidates more accounts: the page follows.
        before = int(text(driver, "#levels-liquidation"))
        _, further = stages()
        crash.deployment.produce(further)
        crash.deployment.wait_applied()
        crash.records = crash.records + further
        want = expected(crash.engines())
        assert want["levels"]["liquidation"] > before
        wait_for(
            "the page to show the new liquidations",
            lambda: text(driver, "#levels-liquidation") == str(want["levels"]["liquidation"]),
        )
        body = summary_of(worker)
        for key in ("fund", "adl", "nearest", "levels", "closing"):
            assert body[key] == want[key], key
        seen = polls(driver)
        wait_for("two more polls", lambda: polls(driver) >= seen + 2)
        assert_page_is(driver, body)
        if SCREENSHOT:
            driver.save_screenshot(SCREENSHOT)
        problems = [
            entry for entry in driver.get_log("browser")
            if entry["level"] in ("SEVERE", "WARNING")
            and not (entry["source"] == "network" and "status of 401" in entry["message"])
        ]  # fmt: skip
        assert not problems, problems  # no script error, no CSP violation (the first 401: ok)
    finally:
        driver.quit()


# -- metrics, Prometheus, rules and dashboard ----------------------------------------


# Families whose samples exist only in a state this test does not reach, with the labels
# their samples carry (stream/metrics.py): their name must still be declared live.
SAMPLED_ONLY_WHILE = {
    "marginstream_restore_remaining_offsets": {"partition"},  # a restore is under way
}


Sample = tuple[dict[str, str], float]


def scraped(worker: Any) -> tuple[dict[str, list[Sample]], set[str]]:
    """A live worker's /metrics: {sample name: [(labels, value) of each sample]}, and the
    names of the families it declares."""
    request = urllib.request.Request(
        f"{worker.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        exposition = answer.read().decode()
    samples: dict[str, list[Sample]] = {}
    declared = set()
    for family in text_string_to_metric_families(exposition):
        declared.add(family.name)
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return samples, declared


def test_metrics_rules_and_dashboard_name_what_a_live_worker_exports(crash: Crash):
    from tests.operator.promql import TARGET_LABELS, expressions, selectors

    samples: dict[str, list[Sample]] = {}
    declared: set[str] = set()
    for worker in crash.workers:
        found, names = scraped(worker)
        declared |= names
        for name, labels in found.items():
            samples.setdefault(name, []).extend(labels)
    # The page's figures as metrics: one series per partition, from its owner, summing to
    # the replay's.
    want = expected(crash.engines())
    fund = samples["marginstream_insurance_fund_balance"]
    assert sorted(labels["partition"] for labels, _ in fund) == ["0", "1", "2", "3"]
    assert sum(value for _, value in fund) == float(want["fund"]["balance"])
    for level, count in want["levels"].items():
        live = [v for s, v in samples["marginstream_accounts_by_level"] if s["level"] == level]
        assert len(live) == 4 and sum(live) == count, (level, live)
    ratios = samples["marginstream_accounts_by_margin_ratio"]
    for bucket, count in zip(want["ratios"]["buckets"], want["ratios"]["counts"], strict=True):
        assert sum(v for s, v in ratios if s["ratio"] == bucket) == count, bucket
    opened = sum(v for _, v in samples["marginstream_liquidations_open"])
    assert opened == want["closing"]["open"]
    assert not any("account" in labels for found in samples.values() for labels, _ in found)
    found = expressions()
    assert len(found) > 20
    wrong = []
    for where, expr in found:
        for metric, labels in selectors(expr):
            if metric == "up":  # Prometheus's own series for each target
                continue
            if metric in SAMPLED_ONLY_WHILE and metric in declared:
                have = SAMPLED_ONLY_WHILE[metric]
            elif metric in samples:
                have = set().union(*(set(labels) for labels, _ in samples[metric]))
            else:
                wrong.append((where, metric, "not exported"))
                continue
            if not labels <= have | set(TARGET_LABELS):
                wrong.append((where, metric, sorted(labels - have)))
    assert not wrong, wrong


def test_prometheus_scrapes_a_live_worker_with_the_token(crash: Crash, tmp_path: Path):
    prometheus = shutil.which("prometheus")
    assert prometheus, "prometheus is missing: `make test` installs it (.ci/system-packages)"
    (tmp_path / "token").write_text(TOKEN)
    targets = [w.url.removeprefix("http://") for w in crash.workers]
    (tmp_path / "prometheus.yml").write_text(
        json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "docker/prometheus/rules.yml")],
            "scrape_configs": [{
                "job_name": "marginstream",
                "authorization": {"type": "Bearer", "credentials_file": str(tmp_path / "token")},
                "static_configs": [{"targets": targets}],
            }],
        })
    )  # fmt: skip
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:

        def query(expr: str) -> list[dict[str, Any]]:
            url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as answer:
                    return json.loads(answer.read())["data"]["result"]
            except OSError:
                return []

        up = wait_for(
            "both workers up",
            lambda: len([r for r in query('up{job="marginstream"} == 1')]) == 2 or None,
            timeout=60,
        )
        assert up
        fund = wait_for(
            "the fund's balance", lambda: query(
                'sum(max by (partition) (marginstream_insurance_fund_balance))'
            ), timeout=30,
        )  # fmt: skip
        want = Decimal(expected(crash.engines())["fund"]["balance"])
        assert float(fund[0]["value"][1]) == pytest.approx(float(want))
        applied = query("sum(marginstream_records_applied_total)")
        assert applied and float(applied[0]["value"][1]) > 0

        # Every rule loaded, and evaluated on the live series without an error.
        def evaluated() -> list[dict[str, Any]] | None:
            url = f"http://127.0.0.1:{port}/api/v1/rules"
            with urllib.request.urlopen(url, timeout=5) as answer:
                groups = json.loads(answer.read())["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                          not r["lastEvaluation"].startswith("0001")
                                          for r in rules) else None  # fmt: skip

        rules = wait_for("the rules evaluated", evaluated, timeout=30)
        assert [r["name"] for r in rules if r["health"] != "ok"] == [], rules
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_a_frozen_worker_costs_the_summary_two_seconds_not_its_answer(crash: Crash):
    """A worker frozen (SIGSTOP; a network cut looks the same): the other's summary comes
    within the 2 s it gives each member, for 40 pages asking at once, with the frozen
    worker's partitions missing, the fund blank, and the frozen worker `unreachable`."""
    frozen, asked = crash.workers
    owned = set(frozen.health()["partitions"])
    assert owned
    time.sleep(0.6)  # past the half second a gathered summary is served again
    frozen.pause()
    try:
        began = time.monotonic()
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda _: asked.get("/risk/summary"), range(40)))
        took = time.monotonic() - began
    finally:
        frozen.resume()  # within the session timeout: no rebalance
    assert took < 5.0, took
    assert {status for status, _ in answers} == {200}
    body = answers[0][1]
    assert set(body["missing"]) == owned and body["fund"] is None
    states = {w["url"]: w["status"] for w in body["workers"]}
    assert states == {frozen.url: "unreachable", asked.url: "ok"}
    wait_settled(crash.deployment)


def test_final_checks_against_the_replay(crash: Crash):
    final_checks(
        crash.deployment, Reference.of(crash.records, Shards(EngineConfig(partitions=4), 4))
    )
