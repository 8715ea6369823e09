"""Verifiable state on the real broker: a commitment per commit, `marginstream verify`
re-deriving all of them from Kafka, proofs served and checked offline, and each kind of
tampering named by partition and epoch."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from marginstream.core import EngineConfig
from marginstream.core.delivery.parts import decode_part
from marginstream.core.shards import Shards
from marginstream.feeds.demo import DemoMarket, demo_events
from marginstream.localworker import LocalWorker
from tests.stream.harness import Deployment, Reference, final_checks, read_all


def marginstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "marginstream", *args], capture_output=True, text=True,
        timeout=300, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


def a_proof(worker: LocalWorker, account: str) -> dict:
    deadline = time.monotonic() + 30
    while True:
        status, body = worker.get(f"/accounts/{account}/proof")
        if status == 200:
            return body
        assert status == 503 and time.monotonic() < deadline, (status, body)
        time.sleep(0.2)


def send(deployment: Deployment, topic: str, key: bytes, value: bytes, partition: int) -> None:
    async def go() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=deployment.bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
        finally:
            await producer.stop()

    asyncio.run(go())


def last_commitments(deployment: Deployment) -> dict[int, tuple[int, dict]]:
    """Each account partition's last commitment: (its commitments partition, the record)."""
    found: dict[int, tuple[int, dict]] = {}
    topic = deployment.prefix + "commitments"
    for _, (partition, _), value in asyncio.run(read_all(deployment.bootstrap, [topic])):
        record = orjson.loads(value)
        found[record["partition"]] = (partition, record)
    return found


def test_verify_re_derives_every_commitment_and_names_each_tampering(
    deployment: Deployment, tmp_path: Path
):
    records = list(demo_events(DemoMarket(accounts=60, steps=6)))
    reference = Reference.of(records, Shards(EngineConfig(partitions=4), 4))  # type: ignore[arg-type]
    worker = deployment.worker("w1").start()
    worker.wait_ready()
    deployment.produce(records)
    deployment.wait_applied()

    # A customer's proof, from the web, checked offline; any byte changed fails it.
    account = sorted(reference.states)[0]
    proof = a_proof(worker, account)
    saved = tmp_path / "proof.json"
    saved.write_bytes(orjson.dumps(proof))
    checked = marginstream("verify-proof", str(saved))
    assert checked.returncode == 0, checked.stderr
    assert f"ok: account {account} is leaf of partition" in checked.stdout
    leaf = bytearray(bytes.fromhex(proof["leaf"]))
    leaf[-3] ^= 0x01
    saved.write_bytes(orjson.dumps({**proof, "leaf": leaf.hex()}))
    refused = marginstream("verify-proof", str(saved))
    assert refused.returncode == 1 and "the proof does not hold" in refused.stderr

    # verify passes over every partition, and the replay's roots are the live ones.
    findings = final_checks(deployment, reference)
    assert findings["verified_partitions"] == 4 and findings["roots_compared_with_the_replay"] == 4
    env = deployment.env()
    clean = marginstream("verify", env=env)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.count(": ok, epochs 1..") == 4, clean.stdout
    # From a checkpoint: each partition from its last commitment at or before epoch 3
    # (partitions commit apart: their epochs differ), or past its last one.
    for epoch in ("3", "999999"):
        later = marginstream("verify", "--from-epoch", epoch, env=env)
        assert later.returncode == 0, later.stdout + later.stderr
        assert later.stdout.count("from the changelog's state at epoch") == 4, later.stdout
    # Nothing to check is not a pass: a prefix with no deployment.
    elsewhere = marginstream("verify", env={**env, "MARGINSTREAM_TOPIC_PREFIX": "nobody-"})
    assert elsewhere.returncode == 1 and "does not exist" in elsewhere.stdout, elsewhere.stdout

    last = last_commitments(deployment)
    # 1. A flipped byte in partition 0's changelog: an account's cash, one digit changed.
    changelog = [r for r in deployment.changelog() if r[0] == 0 and r[1].startswith(b"account/")]
    _, key, value = changelog[-1]
    at = value.index(b'"cash":"') + len(b'"cash":"')
    digit = value[at : at + 1]
    flipped = value[:at] + (b"1" if digit != b"1" else b"2") + value[at + 1 :]
    assert decode_part(flipped).data["cash"] != decode_part(value).data["cash"]
    send(deployment, deployment.names.changelog, key, flipped, 0)
    # 2. A forged commitment of partition 1, chained to nothing.
    where, record = last[1]
    forged = {**record, "epoch": record["epoch"] + 1, "prev": "00" * 32}
    send(deployment, deployment.prefix + "commitments", b"1", orjson.dumps(forged), where)
    # 3. A second record of partition 2's last epoch, with another root.
    where, record = last[2]
    other = {**record, "state_root": "ab" * 32}
    send(deployment, deployment.prefix + "commitments", b"2", orjson.dumps(other), where)

    # 4. A record in `commitments` that is no commitment at all.
    send(deployment, deployment.prefix + "commitments", b"3", b"not json", last[3][0])

    found = marginstream("verify", env=env)
    assert found.returncode == 1, found.stdout
    lines = dict(line.split(": ", 1) for line in found.stdout.splitlines() if "PROBLEM" not in line)
    assert lines["partition 0"].startswith("DIVERGED"), lines
    assert f"epoch {last[0][1]['epoch']}: the changelog, restored, does not give" in lines[
        "partition 0"]  # fmt: skip
    assert f"epoch {last[1][1]['epoch'] + 1}: its prev is not the sha256" in lines["partition 1"]
    equivocated = f"PROBLEM: partition 2 epoch {last[2][1]['epoch']}: equivocation: two records"
    assert f"{equivocated} with different roots" in found.stdout, found.stdout
    assert lines["partition 2"].startswith("DIVERGED"), lines
    assert lines["partition 3"].startswith("ok, epochs 1.."), lines
    assert "not a commitment: not JSON" in found.stdout, found.stdout
