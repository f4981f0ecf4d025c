"""`pgm demo`: one saga through payment on the hosted sandbox page, a partial refund and a total refund."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urljoin

import httpx

from pgm.devstack.dev import (
    DEFAULT_FLOW_MANAGER_PORT,
    DEFAULT_INSPECTOR_PORT,
    StackError,
    StackOptions,
    running_stack,
    running_stack_urls,
)

POLL_SECONDS = 0.1
# States a step cannot leave on its own: reaching one of them instead of the expected state ends the demo.
DEAD_ENDS = frozenset({"PAYMENT_FAILED", "REFUND_FAILED", "SUBSEQUENT_REFUND_FAILED"})


class DemoFailure(RuntimeError):
    """The saga did not do what the demo expects; the message says where it stopped."""


class _FormFinder(HTMLParser):
    """Finds the hosted page's decision form: its action and the values its buttons submit."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.decisions: list[str] = []
        self._in_form = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        """Track the form and collect `decision` buttons."""
        values = dict(attrs)
        if tag == "form" and (values.get("method") or "get").lower() == "post":
            self._in_form = True
            self.action = values.get("action") or ""
        elif self._in_form and tag == "button" and values.get("name") == "decision" and values.get("value"):
            self.decisions.append(str(values["value"]))

    def handle_endtag(self, tag: str) -> None:
        """Leave the form."""
        if tag == "form":
            self._in_form = False


@dataclass
class SagaWatcher:
    """Follows one saga on the Flow Manager and prints each move as it shows up in the history."""

    client: httpx.Client
    saga_id: str
    out: TextIO
    started: float = field(default_factory=time.monotonic)
    printed: int = 0
    saga: dict[str, Any] = field(default_factory=dict)
    business: dict[str, str] = field(default_factory=dict)

    def load_business_states(self) -> None:
        """Business state descriptions from the machine, to print next to their ids."""
        response = self.client.get("/machine-definition")
        if response.is_success:
            for entry in response.json().get("businessStates", []):
                self.business[str(entry.get("id"))] = str(entry.get("description", ""))

    def poll(self) -> dict[str, Any]:
        """Read the saga and print the history entries not printed yet."""
        response = self.client.get(f"/sagas/{self.saga_id}")
        response.raise_for_status()
        self.saga = response.json()
        history = self.saga.get("history") or {}
        states, events = history.get("states", []), history.get("events", [])
        for index in range(self.printed, min(len(states), len(events))):
            state, event = states[index], events[index]
            business = state.get("businessStateId")
            self.out.write(
                f"  {time.monotonic() - self.started:6.2f}s  {event.get('event', '?'):<22} -> "
                f"{state.get('state', '?'):<28} business state {business} {self.business.get(str(business), '')}\n"
            )
            self.printed = index + 1
        self.out.flush()
        return self.saga

    def wait_for(self, state: str, timeout: float) -> dict[str, Any]:
        """Poll until the saga is in `state`; DemoFailure when it lands in a dead end or time runs out."""
        deadline = time.monotonic() + timeout
        while True:
            saga = self.poll()
            current = saga.get("currentState")
            if current == state:
                return saga
            if current in DEAD_ENDS:
                error = (saga.get("metadata") or {}).get("error")
                raise DemoFailure(f"the saga went to {current} instead of {state}" + (f": {error}" if error else ""))
            if time.monotonic() >= deadline:
                raise DemoFailure(f"the saga is still in {current} after {timeout:.0f}s; expected {state}")
            time.sleep(POLL_SECONDS)


def _metadata(amount: int, currency: str) -> dict[str, Any]:
    return {
        "amount": amount,
        "currency": currency,
        "provider": "sandbox",
        "paymentMethod": "credit-cards",
        "shopTransactionId": f"demo-{uuid.uuid4().hex[:10]}",
        "type": "DIRECT",
        "payRequestData": {
            "successRedirect": "https://shop.example/thank-you",
            "failureRedirect": "https://shop.example/payment-failed",
            # The sandbox sends the payer to its hosted page instead of deciding at once.
            "providerData": {"sandboxOutcome": "REDIRECT_TO_URL"},
        },
    }


def _send_event(client: httpx.Client, saga_id: str, label: str, payload: dict[str, Any], out: TextIO) -> None:
    out.write(f"  -> POST /event {label} {json.dumps(payload) if payload else ''}\n")
    response = client.post("/event", json={"key": saga_id, "value": {"messageLabel": label, "messagePayload": payload}})
    if not response.is_success or response.json().get("accepted") is False:
        raise DemoFailure(f"the Flow Manager did not accept {label}: {response.status_code} {response.text[:300]}")


def _approve_on_hosted_page(url: str, out: TextIO) -> None:
    """Open the hosted page and submit its approve button, as a browser does."""
    with httpx.Client(timeout=10, follow_redirects=True) as browser:
        page = browser.get(url)
        if page.status_code != 200:
            raise DemoFailure(f"the hosted page {url} answered {page.status_code}")
        form = _FormFinder()
        form.feed(page.text)
        if form.action is None or "approve" not in form.decisions:
            raise DemoFailure(f"the hosted page {url} has no approve button")
        target = urljoin(str(page.url), form.action)
        out.write(f"  -> hosted page {page.url}: submitting decision=approve\n")
        result = browser.post(target, data={"decision": "approve"})
        if result.status_code != 200:
            raise DemoFailure(f"submitting the hosted page answered {result.status_code}")


def run_demo(
    flow_manager_url: str,
    *,
    amount: int,
    refund: int,
    currency: str,
    timeout: float,
    inspector_url: str | None,
    out: TextIO,
) -> dict[str, Any]:
    """Drive one saga through payment and two refunds; return the final saga or raise DemoFailure."""
    if not 0 < refund < amount:
        raise DemoFailure(f"the partial refund must be between 0 and the amount {amount}, got {refund}")
    with httpx.Client(base_url=flow_manager_url, timeout=10) as client:
        try:
            client.get("/-/healthz").raise_for_status()
        except httpx.HTTPError as error:
            raise DemoFailure(
                f"no Flow Manager at {flow_manager_url} ({error}); start `pgm dev` first, or run `pgm demo --start`"
            ) from None
        created = client.post(
            "/saga",
            json={"associatedEntityId": f"order-{uuid.uuid4().hex[:8]}", "metadata": _metadata(amount, currency)},
        )
        if not created.is_success:
            raise DemoFailure(f"POST /saga answered {created.status_code}: {created.text[:300]}")
        saga_id = str(created.json()["sagaId"])
        out.write(f"saga {saga_id}: {amount} {currency} on the sandbox\n")
        if inspector_url:
            out.write(f"  follow it in the inspector: {inspector_url.rstrip('/')}/sagas/{saga_id}\n")
        watcher = SagaWatcher(client, saga_id, out)
        watcher.load_business_states()
        watcher.wait_for("PAYMENT_CREATED", timeout)

        out.write("1. payment\n")
        _send_event(client, saga_id, "scheduleRequested", {}, out)
        pending = watcher.wait_for("PAYMENT_PENDING", timeout)
        redirect = ((pending.get("metadata") or {}).get("payRequestData") or {}).get("redirectToUrl")
        if not redirect:
            raise DemoFailure("the saga is pending but its metadata has no payRequestData.redirectToUrl")
        _approve_on_hosted_page(str(redirect), out)
        watcher.wait_for("PAYMENT_EXECUTED", timeout)

        out.write("2. partial refund\n")
        _send_event(client, saga_id, "refundRequested", {"refundRequestData": {"amount": refund}}, out)
        watcher.wait_for("PARTIALLY_REFUNDED", timeout)

        out.write("3. total refund\n")
        _send_event(client, saga_id, "refundRequested", {"refundRequestData": {"amount": amount - refund}}, out)
        final = watcher.wait_for("TOTALLY_REFUNDED", timeout)

    metadata = final.get("metadata") or {}
    path = [entry.get("state") for entry in (final.get("history") or {}).get("states", [])]
    out.write(
        "\nsummary\n"
        f"  saga            {saga_id}\n"
        f"  final state     {final.get('currentState')} (business state {final.get('businessStateId')} "
        f"{final.get('businessStateDescription')})\n"
        f"  payment         {metadata.get('paymentId')} · {amount} {currency}\n"
        f"  refunds         {json.dumps(metadata.get('refundDetails'))}\n"
        f"  states          {' -> '.join(str(state) for state in path)}\n"
        f"  took            {time.monotonic() - watcher.started:.2f}s\n"
    )
    if inspector_url:
        out.write(f"  inspector       {inspector_url.rstrip('/')}/sagas/{saga_id}\n")
    out.flush()
    return final


@contextlib.contextmanager
def _own_stack(out: TextIO) -> Iterator[str]:
    """A throwaway stack on free ports and a temporary directory; yields the Flow Manager URL."""
    env = {key: value for key, value in os.environ.items() if key not in ("FLOW_MANAGER_URL", "SAGA_CRUD_URL")}
    with tempfile.TemporaryDirectory(prefix="pgm-demo-") as directory:
        # Its own databases: a demo must not write into the database a `pgm dev` or a real PGM uses.
        env["PGM_DATABASE_URL"] = f"sqlite:///{Path(directory) / 'pgm.sqlite3'}"
        env.setdefault("LOG_LEVEL", "WARNING")
        env.pop("HTTP_PORT", None)
        env.pop("PGM_PUBLIC_URL", None)
        options = StackOptions(
            pgm_port=0,
            flow_manager_port=0,
            crud_port=0,
            inspector_port=0,
            crud_database=str(Path(directory) / "crud.sqlite3"),
            env=env,
        )
        with running_stack(options) as stack:
            assert stack.urls is not None
            out.write(f"started a local stack: PGM {stack.urls.pgm}, Flow Manager {stack.urls.flow_manager}\n")
            yield stack.urls.flow_manager
        out.write("stopped the local stack\n")


def _stack_urls(args: argparse.Namespace, out: TextIO) -> tuple[str, str]:
    """The Flow Manager and inspector to use: the flags, else the `pgm dev` of this directory, else defaults."""
    running = running_stack_urls(Path.cwd())
    if running is not None and args.flow_manager_url is None:
        out.write(f"using the pgm dev running from this directory: Flow Manager {running.flow_manager}\n")
    flow_manager = args.flow_manager_url or (
        running.flow_manager if running else f"http://127.0.0.1:{DEFAULT_FLOW_MANAGER_PORT}"
    )
    inspector = args.inspector_url or (running.inspector if running else f"http://127.0.0.1:{DEFAULT_INSPECTOR_PORT}")
    return flow_manager, inspector


def run_demo_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """`pgm demo`: exit 0 when the saga reached every expected state, 1 when not, 2 when it could not start."""
    stream = out or sys.stdout
    try:
        if args.start:
            # The stack logs through the root logger: only its warnings, unless LOG_LEVEL says otherwise.
            import logging

            logging.basicConfig(level=(os.environ.get("LOG_LEVEL") or "WARNING").upper())
            with _own_stack(stream) as flow_manager_url:
                run_demo(
                    flow_manager_url,
                    amount=args.amount,
                    refund=args.refund,
                    currency=args.currency,
                    timeout=args.timeout,
                    inspector_url=None,
                    out=stream,
                )
        else:
            flow_manager_url, inspector_url = _stack_urls(args, stream)
            run_demo(
                flow_manager_url,
                amount=args.amount,
                refund=args.refund,
                currency=args.currency,
                timeout=args.timeout,
                inspector_url=inspector_url,
                out=stream,
            )
    except StackError as error:
        sys.stderr.write(f"pgm demo: {error}\n")
        return 2
    except (DemoFailure, httpx.HTTPError) as error:
        sys.stderr.write(f"pgm demo: FAILED: {error}\n")
        return 1
    stream.write("pgm demo: OK\n")
    stream.flush()
    return 0


def add_demo_arguments(parser: argparse.ArgumentParser) -> None:
    """The `pgm demo` options."""
    parser.add_argument(
        "--flow-manager-url",
        default=None,
        help="the running Flow Manager (default: the `pgm dev` running from this directory, whatever its ports, "
        f"else http://127.0.0.1:{DEFAULT_FLOW_MANAGER_PORT})",
    )
    parser.add_argument(
        "--inspector-url",
        default=None,
        help="the saga inspector, for the links printed (default: that `pgm dev`'s, "
        f"else http://127.0.0.1:{DEFAULT_INSPECTOR_PORT})",
    )
    parser.add_argument(
        "--start", action="store_true", help="start a throwaway local stack on free ports instead (no `pgm dev` needed)"
    )
    parser.add_argument("--amount", type=int, default=1299, help="amount in minor units (default: %(default)s)")
    parser.add_argument("--refund", type=int, default=499, help="the partial refund (default: %(default)s)")
    parser.add_argument("--currency", default="EUR", help="default: %(default)s")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per expected state (default: %(default)s)")
