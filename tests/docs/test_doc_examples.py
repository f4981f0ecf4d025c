"""Every request example in the README and the docs is executed against live servers, so the
documentation cannot rot (the FastAPI habit). Each document runs on a fresh local stack: the PGM, the
Flow Manager and CRUD stand-ins, and the provider's fake for a provider's page."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, nullcontext
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fakes.adyen import running_adyen_fake
from tests.fakes.axerve import running_axerve_fake
from tests.fakes.braintree import running_braintree_fake
from tests.fakes.flowpay import running_flowpay_fake
from tests.fakes.fnmpay import running_fnmpay_fake
from tests.fakes.nexi import running_nexi_fake
from tests.fakes.satispay import running_satispay_fake
from tests.fakes.scalapay import running_scalapay_fake
from tests.fakes.soisy import running_soisy_fake
from tests.fakes.stripe import running_stripe_fake
from tests.support.databases import fresh_database
from tests.support.doc_examples import Runner, parse, wait_saga
from tests.support.saga_stack import saga_stack
from tests.support.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
FAKES: dict[str, Callable[[], AbstractContextManager[Any]]] = {
    "stripe": running_stripe_fake,
    "adyen": running_adyen_fake,
    "satispay": running_satispay_fake,
    "nexi": running_nexi_fake,
    "braintree": running_braintree_fake,
    "soisy": running_soisy_fake,
    "flowpay": running_flowpay_fake,
    "axerve": running_axerve_fake,
    "fnmpay": running_fnmpay_fake,
    "scalapay": running_scalapay_fake,
}
DOCUMENTS = sorted(
    path.relative_to(ROOT).as_posix()
    for path in [ROOT / "README.md", *ROOT.glob("docs/**/*.md")]
    if any(step.kind == "curl" for step in parse(path.read_text(encoding="utf-8")))
)


def test_the_documents_with_examples_are_found() -> None:
    assert "README.md" in DOCUMENTS
    assert any(name.startswith("docs/providers/") for name in DOCUMENTS)


@pytest.fixture
def stack_for(backend: str, tmp_path: Path) -> Iterator[Callable[[str], Runner]]:
    """Build a runner for a document, with the servers it needs."""
    with ExitStack() as resources:

        def build(document: str) -> Runner:
            provider = Path(document).stem if document.startswith("docs/providers/") else None
            fake = resources.enter_context(FAKES[provider]() if provider else nullcontext(None))
            url = resources.enter_context(fresh_database(backend, tmp_path))
            env = {"ENABLED_PROVIDERS": f"sandbox,{provider}", **fake.env()} if provider else {}
            stack = resources.enter_context(saga_stack(url, tmp_path, **env))
            if fake is not None:
                fake.webhook_url = f"{stack.pgm.url}/v3/{provider}/callback"
            flow_manager_url = str(stack.flow_manager.base_url).rstrip("/")
            hosts = {
                "http://localhost:3000": stack.pgm.url,
                "http://localhost:3100": flow_manager_url,
                "http://localhost:3200": str(stack.crud.base_url).rstrip("/"),
            }
            runner = Runner(hosts=hosts)
            runner.aliases.update(hosts)

            def wait_status(provider_name: str, payment_id: str, status: str) -> None:
                def reached() -> bool:
                    answer = httpx.get(f"{stack.pgm.url}/v3/{provider_name}/status", params={"paymentId": payment_id})
                    return bool(answer.json().get("status") == status)

                wait_for(reached, timeout=15, what=f"payment {payment_id} {status}")

            runner.directives.update({"wait-saga": wait_saga(flow_manager_url), "wait-status": wait_status})
            if fake is not None:
                # What the payer or the provider does between two commands, where the provider has it
                # (Braintree has no hosted page to approve on, but settles sales overnight).
                actions = {
                    "approve": getattr(fake, "approve", None),
                    "decline": getattr(fake, "decline", None),
                    "complete-refund": (lambda refund_id: fake.complete_refund(refund_id, ok=True))
                    if hasattr(fake, "complete_refund")
                    else None,
                    "settle": getattr(fake, "settle", None),
                    # Soisy grants a loan in two steps: approved by its credit check, then verified.
                    "verify": getattr(fake, "verify", None),
                }
                runner.directives.update({name: action for name, action in actions.items() if action is not None})
            return runner

        yield build


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_request_example_runs(stack_for: Callable[[str], Runner], document: str) -> None:
    runner = stack_for(document)
    runner.run(ROOT / document)
    assert runner.ran > 0
