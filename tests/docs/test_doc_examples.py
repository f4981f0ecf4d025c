"""Every request example in the README and the docs is executed against live servers, so the
documentation cannot rot (the FastAPI habit). The documents of a module's run share one local stack: the
PGM with every provider enabled, each provider's fake, and the Flow Manager and CRUD stand-ins. Each
document's merchant references are made its own, so no document sees another's payments."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass
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
from tests.support.saga_stack import SagaStack, saga_stack
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


MERCHANT_REFERENCE = re.compile(r"\border-\d+\b")


def test_the_documents_with_examples_are_found() -> None:
    assert "README.md" in DOCUMENTS
    assert any(name.startswith("docs/providers/") for name in DOCUMENTS)


@dataclass
class SharedStack:
    """The servers documents run against."""

    stack: SagaStack
    fakes: dict[str, Any]


@pytest.fixture(scope="module")
def shared_stack(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[bool], SharedStack]]:
    """Two stacks shared by the module's documents, each started when first needed: the sandbox alone, as
    the README and the general documents show it (their `/-/ready` answers name only the sandbox), and the
    sandbox with every provider enabled against its fake, for the providers' pages. Each has the saga
    stand-ins. Starting a stack costs seconds of CPU; one per document made this module the suite's slowest."""
    with ExitStack() as resources:
        started: dict[bool, SharedStack] = {}

        def shared(with_providers: bool) -> SharedStack:
            if with_providers not in started:
                directory = tmp_path_factory.mktemp("docs")
                fakes = (
                    {provider: resources.enter_context(running()) for provider, running in FAKES.items()}
                    if with_providers
                    else {}
                )
                env = {"ENABLED_PROVIDERS": ",".join(["sandbox", *fakes])}
                for fake in fakes.values():
                    env.update(fake.env())
                url = resources.enter_context(fresh_database(backend, directory))
                stack = resources.enter_context(saga_stack(url, directory, **env))
                for provider, fake in fakes.items():
                    fake.webhook_url = f"{stack.pgm.url}/v3/{provider}/callback"
                started[with_providers] = SharedStack(stack, fakes)
            return started[with_providers]

        yield shared


@pytest.fixture
def stack_for(shared_stack: Callable[[bool], SharedStack]) -> Callable[[str], Runner]:
    """Build a runner for a document on the shared stack it needs."""

    def build(document: str) -> Runner:
        provider = Path(document).stem if document.startswith("docs/providers/") else None
        shared = shared_stack(provider is not None)
        stack = shared.stack
        fake = shared.fakes[provider] if provider else None
        flow_manager_url = str(stack.flow_manager.base_url).rstrip("/")
        hosts = {
            "http://localhost:3000": stack.pgm.url,
            "http://localhost:3100": flow_manager_url,
            "http://localhost:3200": str(stack.crud.base_url).rstrip("/"),
        }
        runner = Runner(hosts=hosts)
        runner.aliases.update(hosts)
        runner.aliases.update(own_references(document))

        def wait_status(provider_name: str, payment_id: str, status: str) -> None:
            def reached() -> bool:
                answer = httpx.get(f"{stack.pgm.url}/v3/{provider_name}/status", params={"paymentId": payment_id})
                return bool(answer.json().get("status") == status)

            wait_for(reached, what=f"payment {payment_id} {status}")

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

    return build


def own_references(document: str) -> dict[str, str]:
    """The document's merchant references (`order-1001`) made its own on the shared PGM: several documents
    show the same ones. The document's index goes before the digits (digits every provider accepts, and no
    reference becomes a prefix of another's replacement)."""
    text = (ROOT / document).read_text(encoding="utf-8")
    index = DOCUMENTS.index(document)
    return {reference: f"order-{index:02d}{reference[6:]}" for reference in set(MERCHANT_REFERENCE.findall(text))}


@pytest.mark.parametrize("document", DOCUMENTS)
def test_every_request_example_runs(stack_for: Callable[[str], Runner], document: str) -> None:
    runner = stack_for(document)
    runner.run(ROOT / document)
    assert runner.ran > 0
