"""Adyen has no payment lookup, so a reversal it notifies cannot be confirmed: it is kept for an operator
and changes nothing (docs/reliability.md#nothing-is-lost)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.adyen import MERCHANT_ACCOUNT, Fake, notification_body, running_adyen_fake
from tests.support.adyen_requests import pay, refund
from tests.support.notifications import statuses_for, wait_for_status
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver


@pytest.fixture(scope="module")
def fake() -> Iterator[Fake]:
    with running_adyen_fake() as running:
        yield running


@pytest.fixture(scope="module")
def pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], fake: Fake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgmProcess]:
    with pgm_with_provider("adyen", fake, backend, tmp_path_factory.mktemp("pgm-adyen"), receiver[1]) as process:
        yield process


def unconfirmed(pgm: PgmProcess) -> float:
    prefix = 'pgm_provider_callbacks_total{provider="adyen",result="unconfirmed"}'
    for line in pgm.get("/-/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_signed_capture_failure_after_authorisation_is_kept_unconfirmed_and_changes_nothing(
    pgm: PgmProcess, fake: Fake, receiver: tuple[RecordingReceiver, str], shop_id: str
) -> None:
    notifications = receiver[0]
    answer = pay(pgm, shop_id)
    assert answer["result"] == "OK"
    psp = answer["paymentId"]
    wait_for_status(notifications, shop_id, "ACCEPTED")
    before = unconfirmed(pgm)
    item = {
        "merchantAccountCode": MERCHANT_ACCOUNT,
        "eventCode": "CAPTURE_FAILED",
        "success": "true",
        "pspReference": f"{psp}CF",
        "originalReference": psp,
        "merchantReference": shop_id,
        "amount": {"value": 1000, "currency": "EUR"},
        "eventDate": "2026-01-01T10:00:00+01:00",
        "additionalData": {},
    }
    response = fake.send_raw(notification_body([item]))
    assert (response.status_code, response.content) == (200, b"[accepted]")
    assert unconfirmed(pgm) == before + 1
    # The payment is still paid: a refund is accepted, and its notification comes after anything queued.
    assert refund(pgm, psp, 300)["result"] in ("OK", "PENDING")
    wait_for_status(notifications, shop_id, "PENDING", action="REFUND")
    assert [s["status"] for s in statuses_for(notifications, shop_id) if s["action"] == "PAYMENT"] == ["ACCEPTED"]
