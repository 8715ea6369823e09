"""Views of what every partition holds a share of: the insurance fund and the
auto-deleveraging ranking (core/liquidation/fund.py, adl.py).

GET /insurance-fund/   the fund: the sum of every partition's slice (balance, uncovered),
                       each slice, and the latest `limit` entries of their histories
                       (newest first; default 100, at most 1000).
GET /adl/{symbol}/     the ranking of the open positions in symbol across every partition,
                       highest score first, per side (long, short): the first `limit`.

Whichever worker is asked gathers the answer: its own active partitions, and one request
to each other owner (routed like account reads, with the token) for theirs. Each
partition ranks its own positions (a sorted list); the receiver merges the sorted lists
and keeps `limit` per side. Cost per request: one round trip to each other worker, and per
partition one pass over the symbol's holders in the risk view (NumPy, no account
decoded) plus a decode of each of the `limit` accounts shown. 503 "recovering" (with the
partitions missing) until every partition has a confirmed, active owner that answered: a
sum over some slices would be a wrong figure, not a partial one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from faust import web as faust_web
from yarl import URL

from marginstream.core.inputs.numbers import decimal_text
from marginstream.core.liquidation import adl
from marginstream.core.risk.instruments import MAX_SYMBOL_LENGTH
from marginstream.stream.web import CHALLENGE, ROUTED, authorized

if TYPE_CHECKING:
    import faust

    from marginstream.core.engine import RiskEngine
    from marginstream.stream.runner import RiskService

DEFAULT_LIMIT, MAX_LIMIT = 100, 1000
ASK_TIMEOUT = 10.0  # seconds another worker has to answer a gathered view


class Gatherer:
    """Asks every owner for its partitions' answers to a path (with the token), and
    gives them with this worker's own: what every gathered view is made from."""

    def __init__(self, service: RiskService) -> None:
        self.service = service
        token = service.settings.web_token
        self.forwarded = {ROUTED: "1", **({"Authorization": f"Bearer {token}"} if token else {})}

    def engines(self) -> dict[int, RiskEngine]:
        """This worker's active partitions' engines (none while its ownership is unconfirmed)."""
        service = self.service
        if not service.confirmed():
            return {}
        return {
            number: owned.work.engine
            for number, owned in sorted(service.partitions.items())
            if owned.active and owned.work is not None
        }

    async def gathered(
        self,
        request: faust_web.Request,
        path: str,
        local: dict[str, Any],
        everyone: bool = False,
        timeout: float = ASK_TIMEOUT,
    ) -> tuple[dict[str, Any], list[int], dict[str, dict[str, Any]]]:
        """{partition: its answer} from every partition, the partitions missing, and the
        other workers' whole answers by URL ({} for one that did not answer within
        timeout). Asked: the owners of the partitions not answered here, or with
        everyone, every member of the group. A routed request asks nobody."""
        service, answers = self.service, dict(local)
        others: dict[str, dict[str, Any]] = {}
        if not request.headers.get(ROUTED):
            asked = {
                url for p, url in service.assignor.owners.items()
                if str(p) not in answers and url and url != service.url
            }  # fmt: skip
            if everyone:
                asked |= {url for url in service.assignor.members if url != service.url}
            urls = sorted(asked)
            bodies = await asyncio.gather(
                *(_ask(url, path, self.forwarded, timeout) for url in urls)
            )
            for url, body in zip(urls, bodies, strict=True):
                answers.update(body.get("partitions", {}))
                others[url] = body
        missing = [p for p in range(service.settings.partitions) if str(p) not in answers]
        return answers, missing, others


def register(app: faust.App, service: RiskService) -> None:
    token = service.settings.web_token
    gatherer = Gatherer(service)
    engines = gatherer.engines

    def limit_of(request: faust_web.Request) -> int | None:
        raw = request.query.get("limit", str(DEFAULT_LIMIT))
        if not (raw.isascii() and raw.isdigit() and len(raw) <= 4):  # not "²", not 10**5000
            return None
        return int(raw) if 1 <= int(raw) <= MAX_LIMIT else None

    def refusal(view: faust_web.View, request: faust_web.Request) -> Any:
        """The answer to a request that cannot be served as asked (None: it can)."""
        if not authorized(request, token):
            return view.json({"error": "unauthorized"}, status=401, headers=CHALLENGE)
        if limit_of(request) is None:
            return view.json({"error": f"limit is 1 to {MAX_LIMIT}"}, status=400)
        return None

    async def answer(
        view: faust_web.View,
        request: faust_web.Request,
        path: str,
        local: dict[str, Any],
        whole: Callable[[dict[str, Any]], tuple[dict[str, Any], int]],
    ) -> faust_web.Response:
        """A routed request: this worker's partitions; else every partition's, made whole."""
        answers, missing, _ = await gatherer.gathered(request, path, local)
        if request.headers.get(ROUTED):
            return view.json({"partitions": answers})
        if missing:
            return view.json({"error": "recovering", "missing": missing}, status=503)
        body, status = whole(answers)
        return view.json(body, status=status)

    @app.page("/insurance-fund/")
    class FundView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            refused = refusal(self, request)
            if refused is not None:
                return refused
            limit = limit_of(request) or DEFAULT_LIMIT
            local = {str(p): e.fund.summary() for p, e in engines().items()}
            path = f"/insurance-fund/?limit={limit}"
            return await answer(
                self, request, path, local, lambda slices: (fund_total(slices, limit), 200)
            )

    @app.page("/adl/{symbol}/")
    class RankingView(faust_web.View):
        async def get(self, request: faust_web.Request, symbol: str) -> faust_web.Response:
            refused = refusal(self, request)
            if refused is not None:
                return refused
            if len(symbol) > MAX_SYMBOL_LENGTH:
                return self.json({"error": "no such instrument"}, status=404)
            limit = limit_of(request) or DEFAULT_LIMIT
            local = {str(p): adl.sides(e, symbol, limit) for p, e in engines().items()}
            known = any(symbol in e.market.instruments for e in engines().values())
            path = f"/adl/{quote(symbol, safe='')}/?limit={limit}"

            def whole(rankings: dict[str, Any]) -> tuple[dict[str, Any], int]:
                if not known and not any(any(r.values()) for r in rankings.values()):
                    return {"error": f"no open position in {symbol}"}, 404
                return {"symbol": symbol, **adl.merged_sides(rankings.values(), limit)}, 200

            return await answer(self, request, path, local, whole)


async def _ask(url: str, path: str, headers: dict[str, str], seconds: float) -> dict[str, Any]:
    """Another owner's answer for its partitions ({} if it cannot be asked now)."""
    timeout = aiohttp.ClientTimeout(total=seconds)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.get(URL(url + path, encoded=True), headers=headers) as answer,
        ):
            if answer.status != 200:
                return {}
            body = await answer.json()
            return body if isinstance(body, dict) else {}
    except (aiohttp.ClientError, OSError, TimeoutError, ValueError):
        return {}


def fund_total(slices: dict[str, dict[str, Any]], limit: int) -> dict[str, Any]:
    """The fund as one: sums of the slices (exact decimal text), and the newest entries."""
    from decimal import Decimal  # noqa: PLC0415

    balance = sum((Decimal(s["balance"]) for s in slices.values()), Decimal(0))
    uncovered = sum((Decimal(s["uncovered"]) for s in slices.values()), Decimal(0))
    entries = [{"partition": int(p), **entry} for p, s in slices.items() for entry in s["history"]]
    entries.sort(key=lambda e: (e["ts"], e["partition"], e["seq"]), reverse=True)
    return {
        "balance": decimal_text(balance),
        "uncovered": decimal_text(uncovered),
        "slices": [
            {key: s[key] for key in ("balance", "uncovered", "entries")} | {"partition": int(p)}
            for p, s in sorted(slices.items(), key=lambda item: int(item[0]))
        ],
        "history": entries[:limit],
    }
