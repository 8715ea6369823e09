"""Read-only HTTP views (Faust's web server).

GET /accounts/{account}/  the account's margin summary, from whichever worker is asked:
                          routed to the worker that owns the account's partition; 503
                          "recovering" while that partition is being opened, has no owner
                          yet, or its owner's membership is not confirmed (a heartbeat
                          answered within the session timeout); 404 for an unknown account.
GET /health/              ok or recovering, owned and standby partitions, counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiokafka.partitioner import murmur2
from faust import web as faust_web

from marginstream.core.reports import account_state
from marginstream.core.risk import assess

if TYPE_CHECKING:
    import faust

    from marginstream.stream.runner import RiskService

ROUTED = "X-Marginstream-Routed"  # set on a routed request: its receiver never routes again


def account_partition(account: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives the account's key."""
    return (murmur2(account.encode()) & 0x7FFFFFFF) % partitions


def register(app: faust.App, service: RiskService) -> None:
    partitions = service.settings.partitions

    @app.page("/accounts/{account}/")
    class AccountView(faust_web.View):
        async def get(self, request: faust_web.Request, account: str) -> faust_web.Response:
            partition = account_partition(account, partitions)
            owned = service.partitions.get(partition)
            if owned is None:
                owner = service.assignor.owners.get(partition)
                if owner and owner != service.url and not request.headers.get(ROUTED):
                    return await self.routed(owner, request)
                return self.json({"error": "recovering"}, status=503)
            work = owned.work
            if not owned.active or work is None:
                return self.json({"error": "recovering"}, status=503)
            if not service.confirmed():  # frozen past its session: the group may have moved it
                return self.json({"error": "recovering", "owner": "unconfirmed"}, status=503)
            found = work.engine.accounts.get(account)
            if found is None:
                return self.json({"error": f"unknown account {account}"}, status=404)
            engine = work.engine
            state = account_state(found, assess(found, engine.market), engine.market)
            return self.json({**state, "partition": partition})

        async def routed(self, owner: str, request: faust_web.Request) -> faust_web.Response:
            timeout = aiohttp.ClientTimeout(total=10)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(owner + request.path, headers={ROUTED: "1"}) as answer,
                ):
                    body = await answer.read()
                    return self.bytes(body, status=answer.status, content_type="application/json")
            except (aiohttp.ClientError, OSError, TimeoutError):
                # The owner is gone and the group has not yet moved its partitions.
                return self.json({"error": "recovering", "owner": "unavailable"}, status=503)

    @app.page("/health/")
    class HealthView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return self.json(service.health())
