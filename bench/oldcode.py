"""Running the worker of an earlier commit beside ours (bench/throughput.py --before).

The earlier code is checked out in a temporary git worktree and its worker started with
PYTHONPATH pointing there; old_code_evidence checks it really ran that code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from marginstream.localworker import LocalDeployment, LocalWorker

# What the worker of 93ca5cb and before commits offsets on, under the prefix: its group is
# the app id alone, and its changelog f"{app_id}-state-changelog" (no prefix).
OLD_GROUP_TOPICS = ("orders", "transfers", "prices", "instruments", "marginstream-market")


@contextlib.contextmanager
def worktree(ref: str) -> Iterator[tuple[Path, str]]:
    """A detached git worktree of ref in a temporary directory, removed at the end."""
    repository = Path(__file__).resolve().parent.parent
    commit = git(repository, "rev-parse", "--verify", f"{ref}^{{commit}}")
    parent = Path(tempfile.mkdtemp(prefix="bench-before-"))
    tree = parent / "tree"
    git(repository, "worktree", "add", "--detach", str(tree), commit)
    try:
        yield tree, commit
    finally:
        try:
            git(repository, "worktree", "remove", "--force", str(tree))
        finally:
            shutil.rmtree(parent, ignore_errors=True)
            git(repository, "worktree", "prune")


def git(repository: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(repository), *arguments], capture_output=True, text=True, check=True
    ).stdout.strip()


def old_settings(env: dict[str, str]) -> dict[str, Any]:
    """Where marginstream is imported from with env (as the worker will be started), and
    that code's default commit interval."""
    probe = (
        "import json, importlib.util, marginstream; "
        "from marginstream.stream.settings import StreamSettings; "
        "print(json.dumps({'file': marginstream.__file__, "
        "'commit_interval': StreamSettings().commit_interval, "
        # From 9d0ffcc on, names are ours (stream/topics.py): group <prefix><app id>...
        "'current_names': importlib.util.find_spec('marginstream.stream.topics') is not None}))"
    )
    completed = subprocess.run(
        [sys.executable, "-c", probe],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(completed.stdout)


def worker_pythonpath(worker: LocalWorker) -> str | None:
    assert worker.process is not None
    environ = Path(f"/proc/{worker.process.pid}/environ").read_bytes().split(b"\0")
    return next(
        (v.decode().partition("=")[2] for v in environ if v.startswith(b"PYTHONPATH=")), None
    )


def recent_code_evidence(worker: LocalWorker, source: Path, file: str) -> dict[str, Any]:
    """That a worker of 9d0ffcc or later ran the code at source (the names are ours, so
    only where it imported marginstream from tells)."""
    evidence = {"pid": worker.process and worker.process.pid, "imported_from": file,
                "pythonpath": worker_pythonpath(worker)}  # fmt: skip
    if evidence["pythonpath"] != str(source) or not file.startswith(str(source)):
        raise RuntimeError(f"the before worker does not look like the old code: {evidence}")
    return evidence


def old_code_evidence(
    worker: LocalWorker, deployment: LocalDeployment, source: Path, changelog: str
) -> dict[str, Any]:
    """That the worker ran the old code: its environment, its health view (the current one
    has commit counters) and its naming (the old changelog name, the old group)."""
    assert worker.process is not None
    pythonpath = worker_pythonpath(worker)
    health = worker.health() or {}

    async def names() -> tuple[list[str], list[str]]:
        admin = AIOKafkaAdminClient(bootstrap_servers=deployment.bootstrap)
        await admin.start()
        try:
            topics = await admin.list_topics()
            committed = await admin.list_consumer_group_offsets(deployment.app_id)
        finally:
            await admin.close()
        return sorted(topics), sorted({tp.topic for tp in committed})

    topics, group_topics = asyncio.run(names())
    evidence = {
        "pid": worker.process.pid,
        "pythonpath": pythonpath,
        "health_keys": sorted(health),
        "old_changelog_exists": changelog in topics,
        "new_changelog_exists": deployment.names.changelog in topics,
        "old_group_topics": group_topics,
    }
    ran_old = (
        pythonpath == str(source)
        and "commits" not in health
        and evidence["old_changelog_exists"]
        and not evidence["new_changelog_exists"]
        and bool(group_topics)
    )
    if not ran_old:
        raise RuntimeError(f"the before worker does not look like the old code: {evidence}")
    return evidence
