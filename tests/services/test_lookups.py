"""Asking a provider about an outcome we lost (services/lookups.py), the one helper behind a lost answer, a
command taken over from a process that stopped, and reconciliation: what the provider says comes back as
its lookup, and anything it cannot say now (a time-out, a provider that is down, a lookup it does not
offer) as `Unanswered` with the reason, never as an exception and never as "no record"."""

from __future__ import annotations

import asyncio
from pathlib import Path

from pgm.domain.statuses import Status
from pgm.providers.base import PaymentLookup, RefundRequest
from pgm.services.lookups import Unanswered, ask_about_payment, ask_about_refund
from pgm.services.settlement import Source
from tests.fakes.external import ExternalService, running_external_service
from tests.support.in_process import ManualClock, external_providers, payment_awaiting_the_payer, services
from tests.support.pgm_process import free_port


def test_asking_about_a_payment_and_its_refund(backend: str, tmp_path: Path, shop_id: str) -> None:
    async def scenario(acme: ExternalService) -> None:
        # `gone` is acme's payment seen through a provider that no longer answers: nothing listens there.
        config = external_providers(tmp_path, acme=acme.base_url, gone=f"http://127.0.0.1:{free_port()}")
        async with services(backend, tmp_path, ManualClock(), EXTERNAL_PROVIDERS_CONFIG=config) as service:
            acme_adapter, gone = service.registry.get("acme"), service.registry.get("gone")
            assert acme_adapter is not None
            assert gone is not None
            payment = await service.payments.reload(await payment_awaiting_the_payer(service, shop_id))
            assert payment.provider_payment_id is not None

            found = await ask_about_payment(acme_adapter, payment)
            assert isinstance(found, PaymentLookup)
            assert (found.payment_id, found.status) == (payment.provider_payment_id, Status.PENDING)
            acme.set_status(payment.provider_payment_id, "ACCEPTED")
            found = await ask_about_payment(acme_adapter, payment)
            assert isinstance(found, PaymentLookup)
            assert found.status is Status.ACCEPTED

            unanswered = await ask_about_payment(gone, payment)
            assert isinstance(unanswered, Unanswered)
            assert unanswered.reason

            # The external contract has no refund lookup: the refund's outcome waits, it is not "no record".
            # (The payment is paid first, as acme said.)
            await service.payments.apply_lookup(acme_adapter, payment.id, found, Source.STATUS_CHECK)
            request = RefundRequest(payment.provider_payment_id, 300, "EUR", f"refund-{shop_id}")
            outcome = await service.payments.refund(acme_adapter, request)
            assert outcome.refund is not None
            assert outcome.payment is not None
            asked = await ask_about_refund(acme_adapter, outcome.payment, outcome.refund)
            assert asked == Unanswered("the external provider cannot be asked about refunds")

    with running_external_service() as acme:
        asyncio.run(scenario(acme))
