"""The web views' and metrics' pure parts, without a broker: routing URLs, account ids,
tokens, dead-letter reason classes, failure kinds, the batch histogram."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from aiokafka.errors import KafkaConnectionError, ProducerFenced, RecordTooLargeError
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from marginstream.core.engine import RiskEngine
from marginstream.core.inputs.envelope import Envelope
from marginstream.stream.commit import PartitionLost
from marginstream.stream.metrics import (
    REASON_CLASSES,
    BatchHistogram,
    StreamMetrics,
    reason_class,
)
from marginstream.stream.settings import SettingsError, StreamSettings
from marginstream.stream.store import StoreFailed
from marginstream.stream.web import authorized, bad_account, routing_url


def test_routing_url_is_reachable_where_the_server_listens():
    # Listening on loopback only: the others (on this machine) must use loopback.
    assert routing_url("worker-host", "127.0.0.1", 6066) == "http://127.0.0.1:6066"
    assert routing_url("worker-host", "::1", 6066) == "http://[::1]:6066"
    assert routing_url("localhost", "127.0.0.1", 6066) == "http://localhost:6066"
    # Listening on every interface or one address: the advertised host, as configured.
    assert routing_url("worker-1", "0.0.0.0", 6066) == "http://worker-1:6066"
    assert routing_url("10.0.0.5", "10.0.0.5", 7000) == "http://10.0.0.5:7000"


def test_an_account_id_no_account_can_have_is_refused():
    assert bad_account("acct-00001") is None
    assert bad_account("é" * 128) is None
    assert "at most 128" in bad_account("a" * 129)
    assert "at most 128" in bad_account("a" * 10_000)
    assert "UTF-8" in bad_account("\udcff")  # an undecodable byte, as aiohttp passes it


def test_bearer_token_check():
    def request(header: str | None) -> SimpleNamespace:
        return SimpleNamespace(headers={} if header is None else {"Authorization": header})

    assert authorized(request(None), None)
    assert authorized(request("Bearer s3cret"), "s3cret")
    assert authorized(request("bearer s3cret"), "s3cret")
    for header in (None, "", "Bearer", "Bearer s3cre", "Bearer s3cret2", "Basic s3cret",
                   "s3cret", "Bearer \udcff"):  # fmt: skip
        assert not authorized(request(header), "s3cret"), header


def test_web_settings_from_the_environment(tmp_path):
    assert StreamSettings.from_env({}).web_bind == "127.0.0.1"
    assert StreamSettings.from_env({}).web_token is None
    settings = StreamSettings.from_env(
        {"MARGINSTREAM_WEB_BIND": "0.0.0.0", "MARGINSTREAM_WEB_TOKEN": "abc"}
    )
    assert (settings.web_bind, settings.web_token) == ("0.0.0.0", "abc")
    assert "abc" not in repr(settings)
    path = tmp_path / "token"
    path.write_text("from-a-file\n")
    env = {"MARGINSTREAM_WEB_TOKEN_FILE": str(path)}
    assert StreamSettings.from_env(env).web_token == "from-a-file"
    with pytest.raises(SettingsError, match="MARGINSTREAM_WEB_TOKEN is set too"):
        StreamSettings.from_env({**env, "MARGINSTREAM_WEB_TOKEN": "abc"})
    path.write_text("\n")
    with pytest.raises(SettingsError, match="the file is empty"):
        StreamSettings.from_env(env)
    with pytest.raises(SettingsError, match="cannot read it"):
        StreamSettings.from_env({"MARGINSTREAM_WEB_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="printable ASCII"):
        StreamSettings.from_env({"MARGINSTREAM_WEB_TOKEN": "two words"})


def _dead_letter_reasons(values: list[object]) -> list[str]:
    engine = RiskEngine()
    reasons = []
    for offset, value in enumerate(values):
        outcome = engine.apply(Envelope("orders", 0, offset, "k", value, None))
        reasons += [o.value["reason"] for o in outcome.outputs if o.topic == "dead-letters"]
    return reasons


def test_dead_letter_reasons_fall_in_a_few_classes():
    order = {"type": "order", "order_id": "o1", "account": "k", "symbol": "BTC-PERP",
             "side": "buy", "qty": "1", "price": "100", "ts": 1}  # fmt: skip
    reasons = _dead_letter_reasons(
        [
            [1, 2],
            {"type": "deposit"},
            {**order, "qty": "NaN"},
            {**order, "qty": "1e40"},
            {**order, "account": "other"},
            order,
            {k: v for k, v in order.items() if k != "qty"},
        ]
    )
    classes = [reason_class(reason) for reason in reasons]
    assert classes == [
        "not_an_object",
        "wrong_type",
        "invalid_field",
        "out_of_bounds",
        "misrouted",
        "unknown_account",
        "missing_field",
    ], list(zip(reasons, classes, strict=True))
    assert reason_class("not JSON (unexpected character)") == "not_json"
    assert reason_class("record of 70000 bytes is over the 65536-byte limit") == "too_large"
    assert reason_class("no value (a tombstone)") == "no_value"
    origin = "a record in the market fan-out topic without valid origin headers"
    assert reason_class(origin) == "no_origin"
    # What the sender chose (an account id) does not choose the class.
    assert reason_class("unknown account bytes is over: it has made no deposit") == (
        "unknown_account"
    )
    assert reason_class("something nobody wrote yet " + "x" * 1000) == "other"
    # The label set is fixed, whatever the reasons.
    assert len({name for name, _ in REASON_CLASSES} | {"other"}) == len(REASON_CLASSES) + 1


def _samples(metrics: StreamMetrics) -> dict[tuple[str, tuple], float]:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_producer_failures_are_counted_by_kind():
    metrics = StreamMetrics()
    metrics.failed("send", PartitionLost("fenced"))
    metrics.failed("commit", ProducerFenced())  # not yet classified: the close path
    metrics.failed("send", RecordTooLargeError())
    metrics.failed("commit", KafkaConnectionError())
    metrics.failed("commit", StoreFailed("disk full"))
    samples = _samples(metrics)
    name = "marginstream_producer_failures_total"
    assert samples[(name, (("kind", "fenced"), ("operation", "send")))] == 1
    assert samples[(name, (("kind", "fenced"), ("operation", "commit")))] == 1
    assert samples[(name, (("kind", "refused"), ("operation", "send")))] == 1
    assert samples[(name, (("kind", "other"), ("operation", "commit")))] == 1
    assert samples[(name, (("kind", "store"), ("operation", "commit")))] == 1


def test_batch_histogram_takes_a_batch_at_once():
    histogram = BatchHistogram("h_seconds", "h", (0.001, 0.01))
    histogram.observe(0.0005, 10)
    histogram.observe(0.001, 1)  # on a bound: counted in it (le)
    histogram.observe(0.005, 3)
    histogram.observe(1.0, 2)
    (family,) = histogram.collect()
    buckets = {s.labels["le"]: s.value for s in family.samples if s.name == "h_seconds_bucket"}
    assert buckets == {"0.001": 11, "0.01": 14, "+Inf": 16}
    counts = {s.name: s.value for s in family.samples if "le" not in s.labels}
    assert counts["h_seconds_count"] == 16
    assert counts["h_seconds_sum"] == pytest.approx(0.005 + 0.001 + 0.015 + 2.0)
