"""The old PGM's Prometheus series (Micrometer's `http_server_requests_seconds` and its `_max`) are exported at
/-/metrics beside ours, fed by the same requests, so dashboards and alerts built on them keep working."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pgm.observability.metrics import RollingMax
from tests.support.pgm_process import PgmProcess

PAY_ROUTE = "/v3/{provider}/{paymentMethod}/pay"


def samples(pgm: PgmProcess) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = pgm.get("/-/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_old_pgm_http_series_count_the_same_requests_as_ours(pgm: PgmProcess, shop_id: str) -> None:
    body = {"amount": 500, "currency": "EUR", "shopTransactionId": shop_id, "providerData": {"sandboxOutcome": "OK"}}
    assert pgm.post("/v3/sandbox/credit-cards/pay", body).status_code == 200
    assert pgm.post("/v3/sandbox/credit-cards/pay", {**body, "amount": "five"}).status_code == 400
    assert pgm.get("/no/such/route").status_code == 404
    found = samples(pgm)

    def ours(status: str) -> float:
        labels = frozenset({"method": "POST", "route": PAY_ROUTE, "status": status}.items())
        return found[("pgm_http_requests_total", labels)]

    def old(status: str, outcome: str, uri: str = PAY_ROUTE, method: str = "POST") -> float:
        labels = frozenset({"method": method, "outcome": outcome, "status": status, "uri": uri}.items())
        return found[("http_server_requests_seconds_count", labels)]

    assert old("200", "SUCCESS") == ours("200") >= 1
    assert old("400", "CLIENT_ERROR") == ours("400") >= 1
    assert old("404", "CLIENT_ERROR", uri="NOT_FOUND", method="GET") >= 1
    success = frozenset({"method": "POST", "outcome": "SUCCESS", "status": "200", "uri": PAY_ROUTE}.items())
    assert found[("http_server_requests_seconds_sum", success)] > 0
    assert found[("http_server_requests_seconds_max", success)] > 0


def test_the_max_is_the_longest_of_the_last_minute_and_decays() -> None:
    now = [1000.0]
    rolling = RollingMax("demo_seconds_max", "demo", ("uri",), clock=lambda: now[0])
    registry = CollectorRegistry()
    registry.register(rolling)
    rolling.observe(("/a",), 0.5)
    now[0] += 25
    rolling.observe(("/a",), 0.2)
    assert registry.get_sample_value("demo_seconds_max", {"uri": "/a"}) == 0.5
    now[0] += 40
    # The 0.5 s request is over a minute old; the 0.2 s one is not.
    assert registry.get_sample_value("demo_seconds_max", {"uri": "/a"}) == 0.2
    now[0] += 60
    assert registry.get_sample_value("demo_seconds_max", {"uri": "/a"}) == 0.0
