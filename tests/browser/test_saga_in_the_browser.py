"""A payer approves on the hosted sandbox page in a real browser; the inspector shows the saga paid."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.browser import ARTIFACTS
from tests.support.dev_process import pgm_dev, sandbox_metadata

pytestmark = pytest.mark.browser


def test_approve_on_the_hosted_page_then_see_it_paid_on_the_inspector(browser: Any, tmp_path: Path) -> None:
    with pgm_dev(tmp_path) as dev:
        saga_id = dev.create_saga(sandbox_metadata("REDIRECT_TO_URL", amount=4250))
        dev.send_event(saga_id, "scheduleRequested")
        pending = dev.wait_state(saga_id, "PAYMENT_PENDING")
        page = browser.new_page()

        page.goto(pending["metadata"]["payRequestData"]["redirectToUrl"])
        assert page.locator("#amount").inner_text() == "42.50 EUR"
        with page.expect_navigation():
            page.click("#approve")
        assert page.locator("#result").inner_text() == "Payment approved"

        page.goto(f"{dev.inspector}/sagas/{saga_id}")
        # The page reloads itself when the saga changes: wait for the state, no polling here.
        page.wait_for_function(
            "document.querySelector('#current-state')?.textContent === 'PAYMENT_EXECUTED'", timeout=15_000
        )
        assert page.locator("#machine .state.current").get_attribute("data-state") == "PAYMENT_EXECUTED"
        assert page.locator("#business-state").inner_text() == "1 PAYMENT_PAID"
        page.wait_for_function(
            "document.querySelector('tr.delivery[data-event=paymentExecuted]')?.dataset.status === 'DELIVERED'",
            timeout=15_000,
        )
        ARTIFACTS.mkdir(exist_ok=True)
        screenshot = ARTIFACTS / "inspector-payment-executed.png"
        page.screenshot(path=str(screenshot), full_page=True)
        assert screenshot.stat().st_size > 10_000
        page.close()
