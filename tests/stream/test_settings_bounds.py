"""Every setting's range, from the table itself (stream/bounds.py): a value below, one
inside and one above each range go through the worker's own start path
(settings.from_env_or_exit); a value out of range is one line and exit status 2. Then
the real worker command with the outside tester's values, and the table's agreement with
the core, docs/configuration.md and the code that reads the environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from marginstream.core.books.ledger import Account, OpenOrder
from marginstream.core.delivery.parts import encode_part
from marginstream.core.engine import RiskEngine
from marginstream.core.inputs import intake
from marginstream.core.liquidation.closeout import LiquidationPolicy
from marginstream.core.outputs.alerts import Thresholds
from marginstream.feeds.demo import TIERS
from marginstream.stream import bounds
from marginstream.stream.bounds import SETTINGS, STALL_SECONDS, Setting
from marginstream.stream.settings import (
    DEFAULTS,
    SettingsError,
    StreamSettings,
    engine_config,
    from_env_or_exit,
)

ROOT = Path(__file__).resolve().parents[2]
ERROR = "marginstream: error: "
HOSTILE = ["1\n2", "x" * 100_000, "\udcff\udcfe", "\x1b[2J\x07", "a\u2028b", "\t"]


def cases() -> list[tuple[Setting, str, str]]:
    """(setting, what, value): every example of every row; `what` says refused or not."""
    found = []
    for setting in SETTINGS:
        examples = setting.examples
        found.append((setting, "inside", examples.inside))
        for what, value in (("below", examples.below), ("above", examples.above)):
            if value is not None:
                found.append((setting, what, value))
        found += [(setting, "refused", value) for value in examples.refused]
    return found


def case_id(case: tuple[Setting, str, str]) -> str:
    setting, what, value = case
    return f"{setting.variable}-{what}-{value[:12]!r}"


@pytest.fixture
def token_dir(tmp_path: Path) -> str:
    (tmp_path / "token").write_text("s3cret-from-a-file\n")
    (tmp_path / "long-token").write_text("t" * 4097)
    return str(tmp_path)


def start(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> tuple[int | None, str]:
    """The worker's start on env: (exit status or None, what it wrote on stderr)."""
    capsys.readouterr()
    try:
        from_env_or_exit(env)
        code = None
    except SystemExit as stop:
        code = stop.code  # type: ignore[assignment]
    return code, capsys.readouterr().err


def refused_in_one_line(variable: str, code: int | None, err: str) -> str:
    assert code == 2, err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert err.startswith(f"{ERROR}{variable}="), err
    assert len(err) < 600, err
    assert "Traceback" not in err
    return err


def test_every_setting_has_a_value_inside_and_one_refused_and_says_why_not_replayed():
    for setting in SETTINGS:
        examples = setting.examples
        assert examples.inside, setting.variable
        assert examples.below or examples.above or examples.refused, setting.variable
        assert setting.replayed or setting.not_replayed_because, setting.variable
    with pytest.raises(ValueError, match="say why"):
        Setting("x", "MARGINSTREAM_X", int, bool, "any", False, bounds.Examples(None, "1", None))


@pytest.mark.parametrize("case", cases(), ids=case_id)
def test_the_table_s_examples_at_the_worker_s_start(case, token_dir, capsys):
    setting, what, value = case
    value = value.replace("{dir}", token_dir)
    code, err = start({setting.variable: value}, capsys)
    if what == "inside":
        assert (code, err) == (None, "")
        settings = StreamSettings.from_env({setting.variable: value})
        assert getattr(settings, setting.field) == setting.parse(value)
    else:
        line = refused_in_one_line(setting.variable, code, err)
        assert setting.range in line


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.variable)
def test_hostile_values_give_one_short_line(setting, capsys):
    for value in HOSTILE:
        code, err = start({setting.variable: value}, capsys)
        line = refused_in_one_line(setting.variable, code, err)
        assert "\x1b" not in line and "\u2028" not in line and "\udcff" not in line
        if setting.secret:
            assert value not in line


@pytest.mark.parametrize("variable", ["KAFKA_SECURITY_PROTOCOL", "KAFKA_SASL_MECHANISM",
                                      "KAFKA_SSL_CHECK_HOSTNAME", "KAFKA_SSL_CAFILE"])  # fmt: skip
def test_the_security_group_refuses_in_the_same_format(variable, capsys):
    env = {"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u",
           "KAFKA_SASL_PASSWORD": "p"}  # fmt: skip
    for value in HOSTILE[:4]:
        code, err = start({**env, variable: value}, capsys)
        refused_in_one_line(variable, code, err)


def test_empty_counts_as_unset_and_defaults_are_inside_their_ranges(capsys):
    env = {setting.variable: "" for setting in SETTINGS}
    assert start(env, capsys) == (None, "")
    assert StreamSettings.from_env(env) == StreamSettings()
    for setting in SETTINGS:
        default = DEFAULTS[setting.field]
        assert default is None or setting.problem(default) is None, setting.variable


def test_the_outside_tester_s_values_are_refused_in_code_too():
    for field, value in [("duplicate_retention_days", -1.0), ("session_timeout", 0.0),
                         ("commit_interval", 120.0), ("standby_replicas", -1),
                         ("max_record_bytes", 50_000_000)]:  # fmt: skip
        with pytest.raises(SettingsError, match=rf"^MARGINSTREAM_{field.upper()}="):
            StreamSettings(**{field: value})


def test_a_value_related_to_another_names_both():
    with pytest.raises(SettingsError) as refused:
        StreamSettings.from_env({"MARGINSTREAM_LIQUIDATION": "0.5"})
    assert str(refused.value).startswith(
        "MARGINSTREAM_LIQUIDATION=0.5: below MARGINSTREAM_MARGIN_CALL (0.8): must be"
    )
    settings = StreamSettings.from_env(
        {"MARGINSTREAM_LIQUIDATION": "0.5", "MARGINSTREAM_MARGIN_CALL": "0.4",
         "MARGINSTREAM_LIQUIDATION_TARGET": "0.3"}
    )  # fmt: skip
    assert settings.engine.thresholds == Thresholds(0.4, 0.5)
    with pytest.raises(SettingsError, match=r"^MARGINSTREAM_LIQUIDATION_TARGET=0\.5: not below"):
        StreamSettings.from_env(
            {**settings_env(settings), "MARGINSTREAM_LIQUIDATION_TARGET": "0.5"}
        )


def settings_env(settings: StreamSettings) -> dict[str, str]:
    return {"MARGINSTREAM_LIQUIDATION": str(settings.liquidation),
            "MARGINSTREAM_MARGIN_CALL": str(settings.margin_call)}  # fmt: skip


def test_the_bounds_agree_with_the_core_s_own_checks():
    """The core keeps its own checks (its defence); the table refuses at least what they
    refuse, and accepts what it says is inside."""
    policy_fields = {
        "liquidation_pricing": "pricing",
        "liquidation_penalty": "penalty_rate",
        "liquidation_lot": "lot",
        "liquidation_reissue_ms": "reissue_after_ms",
    }
    for field, name in policy_fields.items():
        setting = bounds.BY_FIELD[field]
        LiquidationPolicy(**{name: setting.parse(setting.examples.inside)})
        for value in (setting.examples.below, setting.examples.above):
            if value is not None:
                with pytest.raises(ValueError):
                    LiquidationPolicy(**{name: setting.parse(value)})
    with pytest.raises(ValueError):
        Thresholds(1.5, 1.0)
    with pytest.raises(ValueError):
        engine_config({"liquidation_target": 1.0})


def test_every_replayed_setting_changes_the_engine_or_the_record_limit():
    """replayed=True means it changes outputs or state: the engine's configuration, or
    (max record bytes) what intake dead-letters, which replay_lines takes."""
    for setting in SETTINGS:
        if "{dir}" in setting.examples.inside:
            continue  # a file's name: the web token, which is not replayed
        changed = engine_config({setting.field: setting.parse(setting.examples.inside)})
        if setting.replayed and setting.field != "max_record_bytes":
            assert changed != engine_config({}), setting.variable
        elif not setting.replayed and setting.field in DEFAULTS:
            assert changed == engine_config({}), setting.variable


def test_the_commit_interval_s_bound_is_well_within_the_stall_check_and_the_transactions():
    setting = bounds.BY_FIELD["commit_interval"]
    highest = 10.0
    assert setting.check(highest) and not setting.check(highest + 0.001)
    assert highest * 5 <= STALL_SECONDS and highest * 5 <= bounds.TRANSACTION_TIMEOUT_MS / 1000
    assert f"{STALL_SECONDS:g} s stall check" in setting.why("out of range")


def account_part_bytes(orders: int) -> int:
    """The measurement of bounds.OPEN_ORDERS_LIMIT: the stored part of an account with a
    128-character id, full used-id chunks and orders as large as records allow."""
    base = RiskEngine()
    symbols = [f"{n:02d}" + "S" * 62 for n in range(20)]  # 64 characters, the most
    for offset, symbol in enumerate(symbols):
        value = {"type": "instrument", "symbol": symbol, "kind": "perpetual",
                 "underlying": "BTC", "contract_size": "1", "status": "active",
                 "margin": {"tiers": TIERS}}  # fmt: skip
        envelope = intake.envelope("instruments", 0, offset, symbol.encode(), orjson.dumps(value))
        assert not base.apply(envelope).outputs
    big, name = Decimal("999999999999999.999999999999"), "a" * 128
    account = Account(name, cash=-big)
    for n in range(orders):
        order_id = f"{n:0128d}"
        account.orders[order_id] = OpenOrder(
            order_id, symbols[n % 20], "sell", big, big, True, 10**13
        )
    engine = RiskEngine(accounts={name: account}, market=base.market)
    for kind in ("fill", "transfer"):
        for n in range(127):  # the 128th seals the chunk out of the account's part
            engine.ids.remember(name, kind, f"{kind}{n:0124d}", 10**13 + n, 0)
    return len(encode_part(1, engine.part(("account", name))))


def test_the_open_order_limit_keeps_an_account_s_part_under_512_kib():
    limit = bounds.OPEN_ORDERS_LIMIT
    assert account_part_bytes(limit) < 512 * 1024 < account_part_bytes(limit + 100)


def test_the_configuration_page_shows_each_setting_s_range():
    page = (ROOT / "docs/configuration.md").read_text()
    for setting in SETTINGS:
        rows = [line for line in page.splitlines() if line.startswith(f"| `{setting.variable}`")]
        assert len(rows) == 1, setting.variable
        assert rows[0].split(" | ")[2] == setting.range, setting.variable


def test_every_variable_the_worker_reads_is_in_the_table_or_the_security_group():
    sources = [ROOT / "src/marginstream/app.py", *(ROOT / "src/marginstream/stream").glob("*.py")]
    read = set()
    for path in sources:
        read |= set(re.findall(r"\b((?:MARGINSTREAM|KAFKA)_[A-Z_]*[A-Z])\b", path.read_text()))
    security_module = (ROOT / "src/marginstream/stream/security.py").read_text()
    security = set(re.findall(r"\bKAFKA_[A-Z_]*[A-Z]\b", security_module))
    test_only = {"MARGINSTREAM_FAULT"}  # crash tests' fault points (stream/faults.py)
    assert read - {s.variable for s in SETTINGS} - security - test_only == set()
    page = (ROOT / "docs/configuration.md").read_text()
    assert all(f"`{variable}`" in page for variable in security), security


def test_the_real_worker_command_refuses_in_one_line(tmp_path: Path):
    """The outside tester's values, and a few more, each a worker of its own, together."""
    values = [
        ("MARGINSTREAM_DUPLICATE_RETENTION_DAYS", "-1"),
        ("MARGINSTREAM_SESSION_TIMEOUT", "0"),
        ("MARGINSTREAM_COMMIT_INTERVAL", "0"),
        ("MARGINSTREAM_COMMIT_INTERVAL", "120"),
        ("MARGINSTREAM_STANDBY_REPLICAS", "-1"),
        ("MARGINSTREAM_MAX_RECORD_BYTES", "50000000"),
        ("MARGINSTREAM_PARTITIONS", "nan"),
        ("MARGINSTREAM_APP_ID", "a\nb" * 20_000),  # a single argument is at most 128 KiB
    ]
    workers = []
    for n, (variable, value) in enumerate(values):
        env = {**os.environ, variable: value}
        command = [sys.executable, "-m", "faust", "-A", "marginstream.app", "--datadir",
                   str(tmp_path / str(n)), "worker", "--web-port", "1"]  # fmt: skip
        workers.append(
            subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        )
    for (variable, _), worker in zip(values, workers, strict=True):
        out, err = worker.communicate(timeout=60)
        text = (out + err).decode(errors="replace")
        assert worker.returncode == 2, text
        assert "Traceback" not in text
        assert [line for line in text.splitlines() if line.startswith(ERROR)] == [
            err.decode().rstrip("\n")
        ]
        assert err.decode().startswith(f"{ERROR}{variable}=") and err.count(b"\n") == 1
