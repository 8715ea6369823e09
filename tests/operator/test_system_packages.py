""".ci/system-packages, with apt-get and sudo replaced by recorders on PATH: nothing
runs when every program is there, apt-get update then install when one is missing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
SCRIPT = ROOT / ".ci" / "system-packages"
PROGRAMS = (
    "/usr/bin/chromium",
    "/usr/bin/chromedriver",
    "/usr/bin/promtool",
    "/usr/bin/prometheus",
)


def _run(
    tmp_path: Path, root: Path, provides: bool = True
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """The script with apt-get and sudo recorded; apt-get's install puts the programs
    under root (provides) or nothing (an install that does not give them)."""
    shims = tmp_path / "shims"
    shims.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    bin_dir = root / "usr" / "bin"
    install = (
        f'if [ "$1" = install ]; then mkdir -p {bin_dir}; for p in {" ".join(PROGRAMS)}; do '
        f'printf "#!/bin/sh\\n" > {root}$p; chmod 755 {root}$p; done; fi'
        if provides
        else ":"
    )
    for name, body in (
        ("apt-get", f'echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> {calls}; {install}'),
        ("sudo", f'echo sudo >> {calls}; exec "$@"'),
    ):
        (shims / name).write_text(f"#!/bin/sh\n{body}\n")
        (shims / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "SYSTEM_PACKAGES_ROOT": str(root)}
    result = subprocess.run(
        [str(SCRIPT)], check=False, env=env, capture_output=True, text=True, timeout=30
    )
    return result, calls.read_text().splitlines() if calls.exists() else []


def test_it_is_an_executable_bash_script_make_test_runs():
    assert os.access(SCRIPT, os.X_OK)
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    makefile = (ROOT / "Makefile").read_text()
    assert "\nsystem-packages:\n\t.ci/system-packages\n" in makefile
    test = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert set(test.split(":", 1)[1].split()) == {"system-packages", "jars"}


def installed(root: Path) -> Path:
    """root with every program in place, as scripts."""
    for program in PROGRAMS:
        path = root / program.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def test_nothing_to_do_when_every_program_is_there(tmp_path: Path):
    root = installed(tmp_path / "root")
    result, calls = _run(tmp_path, root)
    assert result.returncode == 0, result.stderr
    assert calls == [] and result.stdout == result.stderr == ""


def test_a_missing_program_installs_the_packages(tmp_path: Path):
    result, calls = _run(tmp_path, tmp_path / "empty")
    assert result.returncode == 0, result.stderr
    apt = [call for call in calls if call != "sudo"]
    assert apt == [
        "apt-get update DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y chromium chromium-driver DEBIAN_FRONTEND=noninteractive",
        "apt-get install -y --no-install-recommends prometheus DEBIAN_FRONTEND=noninteractive",
    ]
    assert calls.count("sudo") == (0 if os.geteuid() == 0 else 3)  # root needs no sudo


def test_an_install_that_does_not_give_the_programs_fails(tmp_path: Path):
    result, _ = _run(tmp_path, tmp_path / "empty", provides=False)
    assert result.returncode == 1
    assert result.stderr.splitlines()[-1] == (
        "system-packages: installed chromium chromium-driver prometheus, but chromium "
        "chromedriver promtool prometheus still missing from PATH"
    )


def test_a_directory_is_not_a_program(tmp_path: Path):
    root = installed(tmp_path / "root")
    (root / "usr/bin/chromedriver").unlink()
    (root / "usr/bin/chromedriver").mkdir()
    result, _ = _run(tmp_path, root, provides=False)
    assert "chromedriver missing: installing" in result.stderr
