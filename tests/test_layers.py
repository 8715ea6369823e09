"""The layers pyproject.toml's import contracts draw hold, and cover every part of the package.

`make lint` and CI run `lint-imports` too; running it here keeps `make test` alone from
passing code that breaks a layer. The cover check catches a new top-level module that the
core contract would not forbid, and a core group the models contract forgot.
"""

from __future__ import annotations

import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import marginstream
import marginstream.core

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = {
    c["name"]: c
    for c in tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"][
        "contracts"
    ]
}


def _contract(starting: str) -> dict:
    (contract,) = (c for name, c in CONTRACTS.items() if name.startswith(starting))
    return contract


def test_the_import_contracts_hold() -> None:
    """On this tree's source: lint-imports analyses whichever marginstream is importable,
    and an installed one elsewhere (another checkout's editable install) would pass."""
    lint = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run(
        [str(lint), "--no-cache"],
        check=False,
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in done.stdout


def test_core_is_forbidden_every_other_part_of_the_package() -> None:
    parts = {f"marginstream.{m.name}" for m in pkgutil.iter_modules(marginstream.__path__)}
    forbidden = set(_contract("core imports nothing")["forbidden_modules"])
    assert forbidden == parts - {"marginstream.core"}


def test_every_model_group_is_kept_from_the_engine() -> None:
    """Every core sub-package but delivery and commitments is a model the engine is built
    from. Those two store and commit the engine's state, so may import it; the models may
    still import delivery's leaves (sources, parts, store), which import no model."""
    groups = {
        f"marginstream.core.{m.name}"
        for m in pkgutil.iter_modules(marginstream.core.__path__)
        if m.ispkg
    }
    above = {"marginstream.core.delivery", "marginstream.core.commitments"}
    models = set(_contract("core's models")["source_modules"])
    assert models == groups - above
