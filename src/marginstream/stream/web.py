"""Read-only HTTP views (Faust's web server).

GET /accounts/{account}/  the account's margin summary, from whichever worker is asked:
                          routed to the worker that owns the account's partition; 503
                          "recovering" while that worker's state is being restored.
GET /health/              recovery state, owned partitions, counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import aiohttp
from faust import web as faust_web
from faust.exceptions import SameNode
from faust.web.exceptions import ServiceUnavailable

from marginstream.core.reports import account_state
from marginstream.core.risk import assess

if TYPE_CHECKING:
    import faust

    from marginstream.stream.partitions import Shell
    from marginstream.stream.topics import TopicNames


def recovering(app: faust.App) -> bool:
    recovery = app.tables.recovery
    return bool(app.in_recovery or app.rebalancing or not recovery.completed.is_set())


def register(app: faust.App, shell: Shell, names: TopicNames) -> None:
    orders = app.topic(names.full("orders"), key_serializer="raw", value_serializer="raw")

    @app.page("/accounts/{account}/")
    class AccountView(faust_web.View):
        async def get(self, request: faust_web.Request, account: str) -> faust_web.Response:
            try:  # to the worker that owns the account's partition of the orders topic
                return await app.router.route_topic_req(orders, account, self.web, request)
            except SameNode:
                return self.local(account)
            except (ServiceUnavailable, aiohttp.ClientError, OSError, TimeoutError):
                # The owner is gone and the group has not yet moved its partitions.
                return self.json({"error": "recovering", "owner": "unavailable"}, status=503)

        def local(self, account: str) -> faust_web.Response:
            if recovering(app):
                return self.json({"error": "recovering"}, status=503)
            partition = app.producer.key_partition(orders.get_topic_name(), account.encode())
            loaded = shell.engines.get(partition.partition)
            if loaded is None:
                if partition not in app.assignor.assigned_actives():
                    return self.json({"error": "recovering"}, status=503)
                loaded = shell.engine_for(partition.partition)
            engine = loaded.engine
            found = engine.accounts.get(account)
            if found is None:
                return self.json({"error": f"unknown account {account}"}, status=404)
            state = account_state(found, assess(found, engine.market), engine.market)
            return self.json({**state, "partition": partition.partition})

    @app.page("/health/")
    class HealthView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            store = shell_store(shell)
            orders_topic = orders.get_topic_name()
            assigned = sorted(
                tp.partition for tp in app.assignor.assigned_actives() if tp.topic == orders_topic
            )
            return self.json(
                {
                    "status": "recovering" if recovering(app) else "ok",
                    "assigned": assigned,  # partitions this worker owns
                    "partitions": sorted(shell.engines),  # ... and has loaded an engine for
                    "accounts": sum(len(p.engine.accounts) for p in shell.engines.values()),
                    "records": sum(p.records for p in shell.engines.values()),
                    "engine_loads": shell.loads,
                    "changelog_records_read": getattr(store, "changelog_records_read", None),
                    "changelog_records_applied": getattr(store, "changelog_records_applied", None),
                }
            )


def shell_store(shell: Shell) -> Any:
    access = shell.store
    table = getattr(access, "table", None)
    return None if table is None else table.data
