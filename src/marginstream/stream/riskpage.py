"""The operator's risk page: GET /risk/ (one static HTML file) and the JSON it polls,
GET /risk/summary, gathered from every partition like /insurance-fund/ (stream/gather.py).

/risk/ holds no data, so it is served without the token, with a Content-Security-Policy
that lets only its own inline script (by hash) run and lets it fetch only this origin:
an account id is venue users' text, and the page writes it as text, never as markup.
/risk/summary takes the token as /accounts/ does; the page asks for it once and sends it
with fetch() (a browser's EventSource cannot send a header).

The summary: the deployment's overview (core/outputs/overview.py: counts by level, the ratio
histogram, the nearest to liquidation, open closing sets, the fund, the ADL queues'
heads), every partition's lag, commit delay and owner, and every worker's health and
alert counters (the page turns them into rates). It is 200 while partitions are missing
(`missing` names them), with the fund null: a sum over some slices is a wrong figure,
and the rest is still what the operator needs during a rebalance. Each worker makes a
partition's overview at most once a second (stream/overviews.py).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import time
from importlib import resources
from typing import TYPE_CHECKING, Any

from faust import web as faust_web

from marginstream.core.outputs.overview import merged
from marginstream.stream.gather import Gatherer
from marginstream.stream.web import CHALLENGE, ROUTED, authorized

if TYPE_CHECKING:
    import faust

    from marginstream.stream.runner import RiskService

SUMMARY_PATH = "/risk/summary"
SUMMARY_MAX_AGE = 0.5  # seconds a gathered summary is served again: pages polling together
ASK_SECONDS = 2.0  # another worker's time to answer: past it, its partitions are missing


def page() -> tuple[bytes, str]:
    """The page's bytes, and its Content-Security-Policy (its one inline script by hash)."""
    text = resources.files("marginstream.stream").joinpath("static/risk.html").read_text()
    scripts = re.findall(r"<script>(.*?)</script>", text, flags=re.DOTALL)
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in scripts
    )
    policy = (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return text.encode(), policy


def register(app: faust.App, service: RiskService) -> None:
    token = service.settings.web_token
    gatherer = Gatherer(service)
    body, policy = page()
    headers = {
        "Content-Type": "text/html; charset=utf-8",
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    @app.page("/risk/")
    class RiskPage(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return self.bytes(body, headers=headers)

    made: list[Any] = [0.0, None]  # when the last gathered summary was made, and it
    making: list[asyncio.Task[dict[str, Any]] | None] = [None]  # the gathering under way

    async def own_part() -> tuple[dict[str, Any], dict[str, Any]]:
        """This worker's open partitions' overviews ({partition: overview}) and its part."""
        overviews = service.overviews.current(gatherer.engines())
        local = {str(p): overview for p, overview in overviews.items()}
        return local, await worker_part(service)

    async def gathered(request: faust_web.Request) -> dict[str, Any]:
        """The deployment's summary: this worker's part (taken before the others are
        asked, so nothing in it is older than theirs) and every other member's, each
        given ASK_SECONDS: a frozen worker makes its partitions `missing` and itself
        `unreachable`, not every page wait for it."""
        local, worker = await own_part()
        answers, missing, others = await gatherer.gathered(
            request, SUMMARY_PATH, local, everyone=True, timeout=ASK_SECONDS
        )
        workers = [worker] + [
            body["worker"] if isinstance(body.get("worker"), dict) else unreachable(url)
            for url, body in others.items()
        ]
        body = summary(answers, missing, workers, service.settings.partitions)
        made[:] = [time.monotonic(), body]
        return body

    @app.page(SUMMARY_PATH)
    class SummaryView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            if not authorized(request, token):
                return self.json({"error": "unauthorized"}, status=401, headers=CHALLENGE)
            if request.headers.get(ROUTED):  # another worker gathering: this one's part
                local, worker = await own_part()
                return self.json({"partitions": local, "worker": worker})
            if time.monotonic() - made[0] < SUMMARY_MAX_AGE:
                return self.json(made[1])
            if making[0] is None or making[0].done():  # pages asking together share one
                making[0] = asyncio.ensure_future(gathered(request))
            return self.json(await asyncio.shield(making[0]))


def unreachable(url: str) -> dict[str, Any]:
    """A member of the group that did not answer in time (frozen, gone, cut off)."""
    return {"url": url, "status": "unreachable", "failing": None, "partitions": [],
            "standby": [], "accounts": None, "records": None, "commits": None,
            "fenced": None, "alerts": {}}  # fmt: skip


def summary(
    answers: dict[str, Any], missing: list[int], workers: list[dict[str, Any]], partitions: int
) -> dict[str, Any]:
    """/risk/summary's body from the partitions' overviews and the workers' parts."""
    whole = merged({int(p): part for p, part in answers.items()})
    if missing:
        whole["fund"] = None
    rows: dict[int, dict[str, Any]] = {}
    for worker in workers:
        for number, row in worker.get("partition_rows", {}).items():
            rows.setdefault(int(number), {"partition": int(number), **row})
    return {
        "as_of": int(time.time() * 1000),
        "partitions_total": partitions,
        "missing": missing,
        **whole,
        "partitions": [rows[p] for p in sorted(rows)],
        "workers": sorted(
            ({k: v for k, v in w.items() if k != "partition_rows"} for w in workers),
            key=lambda w: w["url"],
        ),
    }


async def worker_part(service: RiskService) -> dict[str, Any]:
    """What the page shows of one worker: its health, alert counters, and a row per
    partition it has open (lag from the consumer, as /metrics reads it)."""
    health = service.health()
    await service.metrics.refresh()
    lag: dict[int, int] = {}
    for (_, partition), behind in service.metrics.lag.items():
        lag[partition] = lag.get(partition, 0) + behind
    now = time.monotonic()
    rows = {
        str(o.number): {
            "owner": service.url,
            "lag": lag.get(o.number, 0),
            "pending": o.work.records if o.work else 0,
            "pending_seconds": round(now - o.pending_since, 3) if o.pending_since else 0.0,
            "last_commit_delay": round(o.commit_delay, 3),
            "commits": o.commits,
        }
        for o in service.partitions.values()
        if o.active
    }
    return {
        "url": service.url,
        **{key: health[key] for key in ("status", "failing", "partitions", "standby")},
        **{key: health[key] for key in ("accounts", "records", "commits", "fenced")},
        "alerts": service.metrics.alert_counts(),
        "partition_rows": rows,
    }
