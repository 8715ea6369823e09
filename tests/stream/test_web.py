"""The web server's defaults on live workers: it listens on loopback only unless told
otherwise, serves none of faust's own views, answers hostile requests with clean JSON
and no traceback, and with a token refuses requests without it, routed ones included."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from marginstream.core.inputs.keys import account_partition
from marginstream.feeds.demo import DemoMarket, demo_events
from marginstream.localworker import LocalWorker
from tests.stream.harness import Deployment, wait_settled

TOKEN = "test-token-0123456789"


def listening(port: int) -> set[str]:
    """The local addresses of the sockets listening on port (from /proc/net/tcp*)."""
    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # the kernel prints each 32-bit word in host (little-endian) order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, size, 4))
                family = socket.AF_INET if size == 4 else socket.AF_INET6
                found.add(socket.inet_ntop(family, raw))
    return found


def raw_get(worker: LocalWorker, target: bytes) -> tuple[int, bytes, bytes]:
    """Send a request line as given (no client tidies it up): status, headers, body."""
    with socket.create_connection(("127.0.0.1", worker.port), timeout=10) as connection:
        connection.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), head, body


def test_loopback_by_default_no_faust_views_clean_answers(deployment: Deployment):
    default = deployment.worker("default").start()
    # Two more workers of a deployment of their own: default keeps every partition.
    others = Deployment(deployment.bootstrap, deployment.root / "others")
    try:
        everywhere = others.worker("everywhere")
        everywhere.env = {**everywhere.env, "MARGINSTREAM_WEB_BIND": "0.0.0.0"}
        everywhere.start()
        by_faust = others.worker("by-faust")
        by_faust.extra_args = ["--web-bind", "0.0.0.0"]  # faust's own option still works
        by_faust.start()
        for worker in (everywhere, by_faust):
            worker.wait_ready()
        assert listening(everywhere.port) == {"0.0.0.0"}
        assert listening(by_faust.port) == {"0.0.0.0"}
    finally:
        others.stop_all()
    default.wait_ready(partitions=deployment.partitions)
    assert listening(default.port) == {"127.0.0.1"}

    for path in ("/table/", "/table/x/", "/router/", "/router/topics", "/", "/graph/",
                 "/performance/", "/assignment/"):  # fmt: skip
        assert default.get(path) == (404, {"error": "not found"}), path

    hostile = {
        b"/accounts/" + b"a" * 10_000 + b"/": 400,  # past aiohttp's 8190-byte request line
        b"/accounts/" + b"a" * 129 + b"/": 400,  # longer than any account id
        b"/accounts/\xff\xfe/": 400,  # not URL characters
        b"/accounts/%ff%fe/": 404,
        b"/accounts/%ED%A0%80/": 404,
        b"/accounts/%00/": 404,
        b"/accounts/..%2F..%2Ftable%2F/": 404,
        b"/accounts/../table/": 404,
        b"/accounts/a b/": 400,
    }
    for target, status in hostile.items():
        got, head, body = raw_get(default, target)
        assert got == status, (target[:40], got, body[:200])
        assert b"application/json" in head, (target[:40], head)
        assert body.startswith(b"{") and b"error" in body, (target[:40], body[:200])
        assert b"aaaaaaaaaa" not in body  # nothing long echoed back
    assert default.alive()
    log = default.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "refused a request from 127.0.0.1: request line or header too long" in log


def fetch(worker: LocalWorker, path: str, headers: dict[str, str]) -> int:
    request = urllib.request.Request(worker.url + path, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_token_is_required_and_routed_requests_carry_it(deployment: Deployment):
    deployment.extra_env["MARGINSTREAM_WEB_TOKEN"] = TOKEN
    first, second = deployment.worker("w1").start(), deployment.worker("w2").start()
    records = list(demo_events(DemoMarket(accounts=12, steps=1)))
    deployment.produce(records)
    deadline = time.monotonic() + 60
    while True:  # both in the group, the partitions split
        owned = [len((w.health() or {}).get("assigned", [])) for w in (first, second)]
        if sum(owned) == deployment.partitions and min(owned) > 0:
            break
        assert time.monotonic() < deadline, owned
        time.sleep(0.2)
    wait_settled(deployment)
    mine = set(first.health()["assigned"])
    accounts = {r["key"] for r in records if r["topic"] == "transfers"}
    elsewhere = next(a for a in sorted(accounts)
                     if account_partition(a, deployment.partitions) not in mine)  # fmt: skip
    path = f"/accounts/{elsewhere}/"

    good = {"Authorization": f"Bearer {TOKEN}"}
    for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN},
                    {"Authorization": f"Basic {TOKEN}"}):  # fmt: skip
        assert fetch(first, path, headers) == 401, headers
        assert fetch(first, "/metrics", headers) == 401, headers
    status, body = first.get(path, headers={})
    assert (status, body) == (401, {"error": "unauthorized"})
    # Routed to the other worker, with the token: without it the owner would say 401.
    status, body = first.get(path, headers=good)
    assert status == 200, body
    assert body["account"] == elsewhere
    assert body["partition"] not in mine
    assert fetch(first, "/metrics", good) == 200
    assert fetch(first, "/health/", {}) == 200  # open to supervisors' probes
    assert fetch(second, path, {}) == 401  # the owner itself
