"""Read-only HTTP views (Faust's web server).

GET /accounts/{account}/  the account's margin summary, from whichever worker is asked:
                          routed to the worker that owns the account's partition; 503
                          "recovering" while that partition is being opened, has no owner
                          yet, or its owner's membership is not confirmed (a heartbeat
                          answered within the session timeout); 404 for an unknown account,
                          400 for an id no account can have.
GET /accounts/{account}/proof  the proof of the account's leaf in its partition's state
                          tree against the last commitment record (core/commitments/
                          proof.py; `marginstream verify-proof` checks it offline); routed
                          and refused as above, and 503 while a commit is under way.
GET /metrics              Prometheus metrics (stream/metrics.py).
GET /health/              ok or recovering, owned and standby partitions, counts.

With a token (MARGINSTREAM_WEB_TOKEN), /accounts/ (proofs too) and /metrics answer 401 unless the
request carries `Authorization: Bearer <token>`; a routed request carries it on to the
owner. /health/ stays open, for supervisors' probes: it shows counts, no account data
and no other worker's address.

faust's own views are not served (SafeWeb): /table/ would serve table state, /router/
the addresses of every worker, / and /graph/ sensor statistics and the service tree.
A request aiohttp cannot parse (a request line or header over its 8190-byte limit,
bytes that are not HTTP) gets a JSON 400 and one log line, not a traceback.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import aiohttp
from aiohttp import web as aiohttp_web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_server import Server
from faust import web as faust_web
from faust.web.drivers import aiohttp as faust_aiohttp
from prometheus_client.exposition import choose_encoder
from yarl import URL

from marginstream.core.commitments import leaf, proof
from marginstream.core.commitments.tree import leaf_node
from marginstream.core.delivery.parts import decode_part, part_key
from marginstream.core.inputs.keys import account_partition
from marginstream.core.inputs.records import MAX_ID_LENGTH

if TYPE_CHECKING:
    import faust

    from marginstream.stream.runner import RiskService

log = logging.getLogger(__name__)

ROUTED = "X-Marginstream-Routed"  # set on a routed request: its receiver never routes again
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="marginstream"'}


def routing_url(host: str, bind: str, port: int) -> str:
    """The URL this worker tells the group, where the others send it the requests it owns.

    Its web host (--web-host, MARGINSTREAM_WEB_HOST, else the machine's name), unless the
    server listens on a loopback address only: then the other workers, which can only be
    on this machine, reach it at that address, whatever the machine's name resolves to.
    """
    if _loopback(bind) and not _loopback(host):
        host = bind
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bad_account(account: str) -> str | None:
    """Why no account can have this id (None: it may exist)."""
    if len(account) > MAX_ID_LENGTH:
        return f"an account id is at most {MAX_ID_LENGTH} characters"
    try:
        account.encode()
    except UnicodeEncodeError:
        return "an account id is UTF-8 text"
    return None


def authorized(request: Any, token: str | None) -> bool:
    """Does the request carry the bearer token (always, without a token)?"""
    if token is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode("utf-8", "surrogateescape"), token.encode()
    )


def register(app: faust.App, service: RiskService) -> None:
    partitions = service.settings.partitions
    token = service.settings.web_token
    forwarded = {ROUTED: "1", **({"Authorization": f"Bearer {token}"} if token else {})}

    class OwnedView(faust_web.View):
        """A view of one account, answered by the worker that owns its partition."""

        suffix = ""  # the path after /accounts/{account}/

        async def get(self, request: faust_web.Request, account: str) -> faust_web.Response:
            if not authorized(request, token):
                return self.json({"error": "unauthorized"}, status=401, headers=CHALLENGE)
            refused = bad_account(account)
            if refused is not None:
                return self.json({"error": refused}, status=400)
            partition = account_partition(account, partitions)
            owned = service.partitions.get(partition)
            if owned is None:
                owner = service.assignor.owners.get(partition)
                if owner and owner != service.url and not request.headers.get(ROUTED):
                    return await self.routed(owner, account)
                return self.json({"error": "recovering"}, status=503)
            if not owned.active or owned.work is None:
                return self.json({"error": "recovering"}, status=503)
            if not service.confirmed():  # frozen past its session: the group may have moved it
                return self.json({"error": "recovering", "owner": "unconfirmed"}, status=503)
            return self.answer(owned, account, partition)

        def answer(self, owned: Any, account: str, partition: int) -> faust_web.Response:
            raise NotImplementedError

        async def routed(self, owner: str, account: str) -> faust_web.Response:
            timeout = aiohttp.ClientTimeout(total=10)
            url = URL(f"{owner}/accounts/{quote(account, safe='')}/{self.suffix}", encoded=True)
            try:
                async with (
                    aiohttp.ClientSession(timeout=timeout) as session,
                    session.get(url, headers=forwarded) as answer,
                ):
                    body = await answer.read()
                    return self.bytes(body, status=answer.status, content_type="application/json")
            except (aiohttp.ClientError, OSError, TimeoutError):
                # The owner is gone and the group has not yet moved its partitions.
                return self.json({"error": "recovering", "owner": "unavailable"}, status=503)

    @app.page("/accounts/{account}/")
    class AccountView(OwnedView):
        def answer(self, owned: Any, account: str, partition: int) -> faust_web.Response:
            found = owned.work.engine.accounts.get(account)
            if found is None:
                return self.json({"error": f"unknown account {account}"}, status=404)
            return self.json({**owned.work.engine.state_of(found), "partition": partition})

    @app.page("/accounts/{account}/proof")
    class ProofView(OwnedView):
        suffix = "proof"

        def answer(self, owned: Any, account: str, partition: int) -> faust_web.Response:
            found = account_proof(owned, account)
            if isinstance(found, tuple):
                status, error = found
                return self.json({"error": error}, status=status)
            return self.json(found)

    @app.page("/metrics")
    class MetricsView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            if not authorized(request, token):
                return self.json({"error": "unauthorized"}, status=401, headers=CHALLENGE)
            await service.metrics.refresh()
            encode, content_type = choose_encoder(request.headers.get("Accept"))
            body = encode(service.metrics.registry)
            return self.bytes(body, headers={"Content-Type": content_type})

    @app.page("/health/")
    class HealthView(faust_web.View):
        async def get(self, request: faust_web.Request) -> faust_web.Response:
            return self.json(service.health())


def account_proof(owned: Any, account: str) -> dict[str, Any] | tuple[int, str]:
    """The proof of the account's leaf against its partition's last committed commitment
    (core/commitments/proof.py), or (status, error). The leaf is read from the local
    store, which holds exactly the committed state; the tree changes only when a commit
    is sealed, so while one is under way (sealed, not yet committed) the answer is 503."""
    commitments = owned.work.commitments
    if commitments is None or commitments.committed is None:
        return 503, "no commitment yet: try again after the partition's next commit"
    if commitments.last is not None and commitments.last != commitments.committed:
        return 503, "a commit is under way: try again"
    raw = owned.store.get(part_key(("account", account)))
    if raw is None:
        return 404, f"unknown account {account}"
    part = decode_part(raw).data
    leaf_bytes = leaf.account_bytes(part)
    index = part.get("leaf")
    tree = commitments.tree.tree
    if (
        index is None
        or index >= tree.count
        or tree.leaf(index).hash != leaf_node(leaf_bytes, 0, 0).hash
    ):
        return 503, "a commit is under way: try again"
    return proof.make(account, index, leaf_bytes, tree, commitments.committed)


# -- the web server ------------------------------------------------------------------


class SafeWeb(faust_aiohttp.Web):
    """faust's aiohttp server without any of faust's own views (whatever the app's
    settings say), with JSON errors, and quiet about requests it cannot parse."""

    default_blueprints = debug_blueprints = optional_blueprints = production_blueprints = ()

    def __init__(self, app: Any, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.web_app.middlewares.append(_json_errors)
        self._runner = _Runner(self.web_app, access_log=None)


@aiohttp_web.middleware
async def _json_errors(request: aiohttp_web.Request, handler: Any) -> aiohttp_web.StreamResponse:
    """aiohttp's own answers (no such route, method not allowed) and a view's crash, as
    JSON."""
    try:
        return await handler(request)
    except aiohttp_web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() != "content-type"}
        return aiohttp_web.json_response(
            {"error": (error.reason or "error").lower()}, status=error.status, headers=headers
        )
    except Exception:
        log.exception("web view %s failed", request.path[:200])
        return aiohttp_web.json_response({"error": "internal error"}, status=500)


class _Handler(RequestHandler):
    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> aiohttp_web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        reason = (
            "request line or header too long" if isinstance(exc, LineTooLong)
            else "malformed request"
        )  # fmt: skip
        # A warning: the worker's repeat filter (quietlog) keeps a flood of them to one line
        # every few seconds, with a count.
        log.warning("refused a request from %s: %s (%s)", request.remote, reason,
                    type(exc).__name__)  # fmt: skip
        response = aiohttp_web.json_response({"error": reason}, status=status)
        response.force_close()
        return response


class _Server(Server):
    def __call__(self) -> RequestHandler:
        return _Handler(self, loop=self._loop, **self._kwargs)


class _Runner(aiohttp_web.AppRunner):
    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = _Server  # its connections get a _Handler
        return server
