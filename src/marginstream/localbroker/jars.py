"""The broker's jars: resolved from Maven Central once, then reused from a cache.

The cache directory is keyed by a hash of the pom, so editing the pom (a new
Kafka version, say) gives a fresh directory instead of a mix of old and new
jars. A directory only counts once its marker file exists: an interrupted
download is never mistaken for a complete one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from importlib import resources
from pathlib import Path

from marginstream.localbroker.errors import BrokerError

KAFKA_VERSION = "4.4.0"
POM_NAME = "kafka-pom.xml"
COMPLETE_MARKER = ".complete"


def pom_text() -> str:
    return resources.files("marginstream.localbroker").joinpath(POM_NAME).read_text("utf-8")


def pom_kafka_version(text: str) -> str:
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", text)
    if match is None:
        raise BrokerError(f"{POM_NAME} names no <kafka.version>")
    return match.group(1).strip()


def cache_root() -> Path:
    """Where jar sets live: $MARGINSTREAM_CACHE, else the XDG cache directory."""
    explicit = os.environ.get("MARGINSTREAM_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "marginstream"


def jar_dir(root: Path | None = None) -> Path:
    text = pom_text()
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return (root or cache_root()) / f"kafka-{pom_kafka_version(text)}-{digest}"


def cached_jars(root: Path | None = None) -> Path | None:
    """The complete jar directory, or None when it still has to be fetched."""
    directory = jar_dir(root)
    return directory if (directory / COMPLETE_MARKER).exists() else None


def ensure_jars(root: Path | None = None, *, quiet: bool = True) -> Path:
    """Return the jar directory, running Maven only when the cache lacks it."""
    found = cached_jars(root)
    if found is not None:
        return found
    target = jar_dir(root)
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(
            "mvn not found on PATH: it is needed once to fetch the Kafka jars from Maven Central "
            "(install Maven, e.g. `apt install maven`)"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=target.parent) as work:
        pom = Path(work) / "pom.xml"
        pom.write_text(pom_text(), "utf-8")
        staging = Path(work) / "jars"
        command = [
            mvn,
            "-B",
            *(["-q"] if quiet else []),
            "-f",
            str(pom),
            "dependency:copy-dependencies",
            f"-DoutputDirectory={staging}",
            "-DincludeScope=runtime",
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0 or not any(staging.glob("kafka_2.13-*.jar")):
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise BrokerError(
                f"mvn could not fetch the Kafka {KAFKA_VERSION} jars (exit {result.returncode}):\n"
                f"{tail}"
            )
        (staging / COMPLETE_MARKER).write_text(KAFKA_VERSION + "\n")
        if target.exists():  # a leftover without its marker: replace it whole
            shutil.rmtree(target, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:
            # Another process finished the same fetch first; its copy is as good as ours.
            if cached_jars(root) is None:
                raise
    return target


def cache_size_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.iterdir() if path.is_file())
