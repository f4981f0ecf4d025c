"""The Grafana dashboard and the Prometheus alert rules of deploy/monitoring name only what a running
PGM exports on /-/metrics, with the labels those metrics have, in PromQL that parses."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from pgm.observability.metrics import Metrics
from tests.support.pgm_process import PgmProcess
from tests.support.sandbox_requests import pay_body

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/monitoring/grafana-dashboard.json"
RULES = ROOT / "deploy/monitoring/prometheus-rules.yaml"
# Labels Prometheus adds to every scraped series, and a histogram's bucket bound.
SCRAPE_LABELS = {"job", "instance"}
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("_sum", "_count", "_created"),
}


def dashboard_expressions() -> Iterator[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            # Grafana's own variables, as Grafana substitutes them before asking Prometheus.
            yield target["expr"].replace("$__rate_interval", "5m").replace("$job", ".*")
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            (metric,) = re.findall(r"label_values\((\w+),", variable["definition"])
            yield metric


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def selectors(expression: str) -> list[tuple[str, set[str]]]:
    """(metric name, label names matched) of every series an expression selects; fails on bad PromQL."""
    found: list[tuple[str, set[str]]] = []

    def visit(node: promql_parser.Expr) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            found.append((str(node.name), {matcher.name for matcher in node.matchers.matchers}))

    promql_parser.walk(promql_parser.parse(expression), visit)
    return found


def declared_labels() -> dict[str, set[str]]:
    """Each exported series name → the label names its metric is declared with."""
    labels: dict[str, set[str]] = {}
    for collector in vars(Metrics()).values():
        names = getattr(collector, "_labelnames", None)
        if names is None:
            continue
        kind = collector._type
        for suffix in SUFFIXES[kind]:
            base = collector._name
            labels[f"{base}{suffix}"] = set(names) | ({"le"} if suffix == "_bucket" else set())
    return labels


@pytest.fixture
def exported(start_pgm: Callable[..., PgmProcess], shop_id: str) -> tuple[set[str], list[Sample]]:
    """The series names a running PGM exports (after a payment and a pending one), and its samples."""
    pgm = start_pgm(PGM_RECONCILE_AFTER_SECONDS="600")
    assert pgm.post("/v3/sandbox/credit-cards/pay", pay_body(shop_id, "OK")).json()["result"] == "OK"
    pending = pgm.post("/v3/sandbox/credit-cards/pay", pay_body(f"{shop_id}-p", "PENDING")).json()
    assert pending["result"] == "PENDING"
    text = pgm.get("/-/metrics").text
    names: set[str] = set()
    samples: list[Sample] = []
    for family in text_string_to_metric_families(text):
        names.update(f"{family.name}{suffix}" for suffix in SUFFIXES.get(family.type, ("",)))
        samples.extend(family.samples)
    return names, samples


def test_every_metric_the_dashboard_and_the_rules_name_is_exported(exported: tuple[set[str], list[Sample]]) -> None:
    names, _ = exported
    labels = declared_labels()
    expressions = [*dashboard_expressions(), *(rule["expr"] for rule in rules())]
    assert len(expressions) > 20
    used: set[str] = set()
    for expression in expressions:
        for metric, matched in selectors(expression):
            assert metric in names, f"{metric} is not exported (in {expression})"
            assert matched - SCRAPE_LABELS <= labels[metric], f"{metric} has no label {matched} ({expression})"
            used.add(metric)
    # What the dashboard must show: outcomes, providers, outbox, reconciliation, saga inbox.
    for metric in (
        "pgm_payments_total",
        "pgm_saga_events_total",
        "pgm_provider_calls_total",
        "pgm_provider_call_duration_seconds_bucket",
        "pgm_outbox_messages",
        "pgm_reconciliation_queue",
        "pgm_saga_inbox_oldest_pending_seconds",
    ):
        assert metric in used


def test_outcomes_and_the_reconciliation_queue_are_counted(exported: tuple[set[str], list[Sample]]) -> None:
    _, samples = exported

    def value(name: str, **labels: str) -> float:
        matching = [s.value for s in samples if s.name == name and labels.items() <= s.labels.items()]
        assert matching, f"no sample {name}{labels}"
        return sum(matching)

    assert value("pgm_payments_total", provider="sandbox", status="ACCEPTED") >= 1
    assert value("pgm_payments_total", provider="sandbox", status="PENDING") >= 1
    assert value("pgm_reconciliation_queue", kind="payment", provider="sandbox") == 1
    assert value("pgm_saga_inbox_pending_commands") == 0


def test_the_alert_rules_cover_what_operators_must_hear_about() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    alerts = {rule["alert"]: rule for rule in rules()}
    assert {"PgmOutboxGrowing", "PgmDeadLetters", "PgmProviderFailing", "PgmSagaInboxStuck"} <= set(alerts)
    for name, rule in alerts.items():
        assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])
        assert promql_parser.parse_duration(rule["for"]).total_seconds() > 0
    assert "## Alerts" in (ROOT / "docs/operations.md").read_text()


def test_an_unknown_metric_would_be_caught() -> None:
    assert selectors('max(pgm_outbox_mesages{status="DEAD"})') == [("pgm_outbox_mesages", {"status"})]
    with pytest.raises(ValueError, match=r".+"):
        promql_parser.parse("sum(rate(pgm_http_requests_total[5m])")
