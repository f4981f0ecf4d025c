"""A validly signed Stripe webhook that would undo a settled payment (docs/reliability.md#nothing-is-lost):
while Stripe cannot be asked, nothing changes and the notification waits; once asked, Stripe's own answer
decides."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator

import pytest

from tests.fakes.stripe import StripeFake, running_stripe_fake
from tests.support.notifications import statuses_for
from tests.support.pgm_process import PgmProcess
from tests.support.provider_pgm import pgm_with_provider
from tests.support.servers import RecordingReceiver, wait_for
from tests.support.stripe_requests import SESSIONS, paid


@pytest.fixture(scope="module")
def fake() -> Iterator[StripeFake]:
    with running_stripe_fake() as running:
        yield running


@pytest.fixture(scope="module")
def stripe_pgm(
    backend: str, receiver: tuple[RecordingReceiver, str], fake: StripeFake, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PgmProcess]:
    with pgm_with_provider("stripe", fake, backend, tmp_path_factory.mktemp("pgm-stripe"), receiver[1]) as process:
        yield process


def callback_results(pgm: PgmProcess, result: str) -> float:
    prefix = f'pgm_provider_callbacks_total{{provider="stripe",result="{result}"}}'
    for line in pgm.get("/-/metrics").text.splitlines():
        if line.startswith(prefix):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_a_reversal_stripe_cannot_confirm_now_changes_nothing_and_is_asked_again(
    stripe_pgm: PgmProcess, fake: StripeFake, receiver: tuple[RecordingReceiver, str], shop_id: str
) -> None:
    notifications = receiver[0]
    payment_id = paid(stripe_pgm, fake, notifications, shop_id)
    completed = next(
        e for e in fake.events if e["type"] == "checkout.session.completed" and e["data"]["object"]["id"] == payment_id
    )
    expired = copy.deepcopy(completed)
    expired.update(id=f"evt_{uuid.uuid4().hex}", type="checkout.session.expired")
    expired["data"]["object"].update(status="expired", payment_status="unpaid")
    payload = json.dumps(expired).encode()
    unconfirmed = callback_results(stripe_pgm, "unconfirmed")
    settled = [s["status"] for s in statuses_for(notifications, shop_id)]
    assert settled[-1] == "ACCEPTED"
    fake.fail_next(503, method="GET", path=f"{SESSIONS}/{payment_id}")
    assert fake.post_webhook(payload, fake.sign(payload)).status_code == 200
    # Stripe could not be asked: nothing changed, and the notification was not judged yet.
    assert callback_results(stripe_pgm, "unconfirmed") == unconfirmed
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == settled
    # Asked again on the deferred schedule, Stripe says the session is paid: the claim is set aside.
    wait_for(
        lambda: callback_results(stripe_pgm, "unconfirmed") == unconfirmed + 1,
        timeout=10,
        interval=0.1,
        what="the reversal judged once Stripe answers",
    )
    assert stripe_pgm.get("/v3/stripe/status", params={"paymentId": payment_id}).json()["status"] == "ACCEPTED"
    assert [s["status"] for s in statuses_for(notifications, shop_id)] == settled
