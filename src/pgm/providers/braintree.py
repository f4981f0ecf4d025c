"""Adapter for Braintree (PayPal and cards) through the official `braintree` SDK, following the
existing PGM's Braintree contract (docs/providers/braintree.md).

What Braintree offers and how it maps here:
* pay: `transaction.sale` with `submit_for_settlement` (always on, as in the existing PGM since 2.6.1)
  from a payment method nonce made by Braintree's client SDK (PayPal, cards; 3-D Secure happens there,
  before the nonce exists), from a vaulted payment method token, or from a vaulted customer's default
  method. The answer is final at once: OK or KO, never a redirect;
* refund: `transaction.void` while the sale is not settled yet (only the whole amount: Braintree cannot
  void part of a sale), `transaction.refund` (partial or total) once it is settling or settled;
* provider-managed subscriptions on a plan created in Braintree's Control Panel: create, update,
  find, cancel (monthly, as Braintree plans bill in months);
* webhooks (`bt_signature` / `bt_payload` form fields) verified and parsed by the SDK.

The SDK is synchronous (`requests`): every call runs in a worker thread so none blocks the event
loop, with the provider time-out. Braintree has no idempotency keys: a sale whose answer was lost is
found again by its `order_id` (our shopTransactionId), a refund by its own `order_id` (our key).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit
from xml.parsers.expat import ExpatError

import braintree
from braintree.exceptions import (
    AuthenticationError,
    AuthorizationError,
    NotFoundError,
    UpgradeRequiredError,
)
from braintree.exceptions.braintree_error import BraintreeError
from requests import RequestException

from pgm.config import ConfigurationError, Settings
from pgm.domain.statuses import Status
from pgm.providers.base import (
    CallbackAnswer,
    CallbackRequest,
    Capabilities,
    Interval,
    InvalidCallback,
    InvalidProviderData,
    ListedRefund,
    Notification,
    Operation,
    OutcomeUnknown,
    PaymentLookup,
    PayRequest,
    PayResult,
    PayResultCode,
    ProviderAdapter,
    ProviderRejected,
    RefundRequest,
    RefundResult,
    Subject,
    SubscriptionLookup,
    SubscriptionState,
)

REQUIRED_VARIABLES: tuple[str, ...] = (
    "BRAINTREE_MERCHANT_ID",
    "BRAINTREE_MERCHANT_ACCOUNT_ID",
    "BRAINTREE_PUBLIC_KEY",
    "BRAINTREE_PRIVATE_KEY",
)
log = logging.getLogger("pgm.providers.braintree")
# How far back find_payment searches for a sale whose answer was lost; reconciliation asks within hours.
LOOKBACK = timedelta(days=7)
# Braintree: order_id is at most 255 characters, customer and plan ids at most 36.
ORDER_ID_MAX = 255
ID_MAX = 36
NONCE_MAX = 4096
# Braintree calls in flight at once per process (each holds a thread while the SDK waits for the gateway).
SDK_THREADS = 16
DEVICE_DATA_MAX = 4096

CAPABILITIES = Capabilities(
    operations=frozenset(
        {
            Operation.PAY,
            Operation.REFUND,
            Operation.SUBSCRIPTION_SCHEDULE,
            Operation.SUBSCRIPTION_UPDATE,
            Operation.SUBSCRIPTION_STATUS,
            Operation.SUBSCRIPTION_EXPIRE,
            Operation.STATUS,
            Operation.CALLBACK,
        }
    ),
    payment_methods=frozenset({"pay-pal", "credit-cards"}),
    # Braintree plans bill every N months; the existing PGM offers MONTH only.
    intervals=frozenset({Interval.MONTH}),
    currencies=frozenset({"EUR"}),
    # A sale carries its refunds' ids: how the PGM learns of a Control Panel refund (no webhook it reads reports one).
    lists_refunds=True,
)

# Transaction.status → ours (Braintree "Transaction statuses"). A sale is submitted for settlement at
# once, so `authorized` only appears when someone changed that in the Control Panel: the money is held.
TRANSACTION_STATUS: dict[str, Status] = {
    "authorizing": Status.PENDING,
    "authorized": Status.ACCEPTED,
    "submitted_for_settlement": Status.ACCEPTED,
    "settlement_pending": Status.ACCEPTED,
    "settling": Status.ACCEPTED,
    "settled": Status.ACCEPTED,
    "settlement_confirmed": Status.ACCEPTED,
    "voided": Status.FAILED,
    "processor_declined": Status.FAILED,
    "gateway_rejected": Status.FAILED,
    "failed": Status.FAILED,
    "authorization_expired": Status.FAILED,
    "settlement_declined": Status.FAILED,
}
# A refund (a credit transaction) is done once Braintree accepted it for settlement.
REFUND_STATUS: dict[str, Status] = {
    "submitted_for_settlement": Status.ACCEPTED,
    "settlement_pending": Status.ACCEPTED,
    "settling": Status.ACCEPTED,
    "settled": Status.ACCEPTED,
    "settlement_confirmed": Status.ACCEPTED,
    "authorizing": Status.PENDING,
    "authorized": Status.PENDING,
    "processor_declined": Status.FAILED,
    "gateway_rejected": Status.FAILED,
    "failed": Status.FAILED,
    "voided": Status.FAILED,
    "settlement_declined": Status.FAILED,
}
# Transaction.payment_instrument_type → our payment method path segment.
PAYMENT_METHODS = {"paypal_account": "pay-pal", "credit_card": "credit-cards"}
# Before these a sale can only be voided (whole); from these on it can be refunded (Braintree "Refunds").
VOIDABLE = frozenset({"authorized", "submitted_for_settlement", "settlement_pending"})
REFUNDABLE = frozenset({"settling", "settled", "settlement_confirmed"})

# Subscription.status → ours (Braintree "Subscription statuses").
SUBSCRIPTION_STATE: dict[str, SubscriptionState] = {
    "Active": SubscriptionState.ACTIVE,
    "Canceled": SubscriptionState.CANCELED,
    "Expired": SubscriptionState.EXPIRED,
    "Past Due": SubscriptionState.PAST_DUE,
    "Pending": SubscriptionState.PENDING,
}
ENDED_SUBSCRIPTIONS = frozenset({"Canceled", "Expired"})

# Webhook kind → the status it reports for the sale it carries. Subscription kinds (charged successfully
# or not, canceled, expired) are about renewals the PGM never started: acknowledged and left alone, as
# are disbursements, disputes and the rest. A sale of a subscription is left alone too, for the same
# reason: its status comes from /status and reconciliation.
TRANSACTION_EVENTS: dict[str, Status] = {
    "transaction_settled": Status.ACCEPTED,
    "transaction_settlement_declined": Status.FAILED,
}

T = TypeVar("T")


def amount_text(minor_units: int) -> str:
    """Minor units as Braintree's decimal amount string (1299 → "12.99")."""
    return str((Decimal(minor_units) / 100).quantize(Decimal("0.01")))


def minor_units(amount: Any) -> int | None:
    """Braintree's decimal amount as minor units; None when it is not a number."""
    try:
        return int((Decimal(str(amount)) * 100).to_integral_value())
    except (InvalidOperation, ValueError):
        return None


def environment_from(env: Mapping[str, str]) -> braintree.Environment:
    """BRAINTREE_BASE_URL (a gateway of our own: tests, a proxy), else Sandbox or Production per
    BRAINTREE_IS_SANDBOX, which defaults to true: a forgotten variable must never reach the live gateway."""
    override = (env.get("BRAINTREE_BASE_URL") or "").strip()
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError("BRAINTREE_BASE_URL must be an http(s) URL")
        port = str(parts.port or (443 if parts.scheme == "https" else 80))
        if (parts.scheme == "https") != (port == "443"):
            # The SDK speaks https exactly when the port is 443.
            raise ConfigurationError("BRAINTREE_BASE_URL must be https on port 443 or http on another port")
        return braintree.Environment("custom", parts.hostname, port, "", parts.scheme == "https", None)
    flag = (env.get("BRAINTREE_IS_SANDBOX") or "true").strip().lower()
    if flag not in {"true", "false", "1", "0", "yes", "no"}:
        raise ConfigurationError("BRAINTREE_IS_SANDBOX must be true or false")
    return braintree.Environment.Sandbox if flag in {"true", "1", "yes"} else braintree.Environment.Production


def build(settings: Settings) -> BraintreeAdapter:
    """The Braintree adapter from BRAINTREE_* variables."""
    env = settings.provider_env
    return BraintreeAdapter(
        environment=environment_from(env),
        merchant_id=env["BRAINTREE_MERCHANT_ID"].strip(),
        merchant_account_id=env["BRAINTREE_MERCHANT_ACCOUNT_ID"].strip(),
        public_key=env["BRAINTREE_PUBLIC_KEY"].strip(),
        private_key=env["BRAINTREE_PRIVATE_KEY"].strip(),
        timeout_seconds=settings.provider_timeout_seconds,
    )


class BraintreeAdapter(ProviderAdapter):
    """Braintree's gateway behind the common adapter interface, plus the utilities of the existing PGM."""

    name = "braintree"
    capabilities = CAPABILITIES

    def __init__(
        self,
        *,
        environment: braintree.Environment,
        merchant_id: str,
        merchant_account_id: str,
        public_key: str,
        private_key: str,
        timeout_seconds: float,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._gateway = braintree.BraintreeGateway(
            braintree.Configuration(
                environment=environment,
                merchant_id=merchant_id,
                public_key=public_key,
                private_key=private_key,
                # requests takes fractions of a second; the stubs say int.
                timeout=timeout_seconds,  # type: ignore[arg-type]
                # Transport faults as the SDK's own exceptions (time-outs, refused connections), not requests'.
                wrap_http_exceptions=True,
            )
        )
        self._merchant_account_id = merchant_account_id
        self._public_key = public_key
        self._now = now
        # The SDK blocks (requests): its calls get threads of their own, so a slow Braintree never takes
        # the event loop's default executor from everything else that needs it.
        self._threads = ThreadPoolExecutor(max_workers=SDK_THREADS, thread_name_prefix="braintree")

    async def aclose(self) -> None:
        """Let the SDK's worker threads finish and end."""
        self._threads.shutdown(wait=False, cancel_futures=True)

    # ----- validation -----

    def check(self, operation: Operation, request: PayRequest | RefundRequest) -> None:
        """Validate providerData before anything is stored or sent."""
        if isinstance(request, RefundRequest):
            return
        data = request.provider_data
        if len(request.shop_transaction_id) > ORDER_ID_MAX:
            raise InvalidProviderData(
                f"shopTransactionId is Braintree's order id: at most {ORDER_ID_MAX} characters",
                field="shopTransactionId",
            )
        customer = _optional_id(data, "customerId")
        _optional_text(data, "deviceData", DEVICE_DATA_MAX)
        _optional_bool(data, "storeInVault")
        _optional_bool(data, "threeDSecureRequired")
        vaulted = _optional_bool(data, "vaulted")
        nonce = _optional_text(data, "nonce", NONCE_MAX)
        token = _optional_text(data, "paymentToken", ID_MAX * 2)
        if operation is Operation.PAY:
            if sum(bool(x) for x in (nonce, token, vaulted)) != 1:
                raise InvalidProviderData(
                    "providerData needs exactly one of nonce (from Braintree's client SDK), paymentToken (a "
                    "vaulted payment method) or vaulted: true with customerId (the customer's default method)",
                    field="providerData.nonce",
                )
            if vaulted and not customer:
                raise InvalidProviderData(
                    "providerData.customerId is required with vaulted: true", field="providerData.customerId"
                )
        elif operation is Operation.SUBSCRIPTION_SCHEDULE:
            _required_id(data, "planId")
            if not token and not (nonce and customer):
                raise InvalidProviderData(
                    "providerData needs paymentToken (a vaulted payment method) or nonce with customerId",
                    field="providerData.paymentToken",
                )
            count = request.subscription.interval_count if request.subscription else None
            if count is not None and not 1 <= count <= 12:
                raise InvalidProviderData(
                    "subscriptionInfo.intervalCount must be from 1 to 12 months: it is the billing frequency "
                    "of the Braintree plan named by providerData.planId",
                    field="subscriptionInfo.intervalCount",
                )

    # ----- operations -----

    async def pay(self, request: PayRequest) -> PayResult:
        """A sale submitted for settlement: the answer is final (OK or KO)."""
        self.check(Operation.PAY, request)
        data = request.provider_data
        params: dict[str, Any] = {
            "amount": amount_text(request.amount),
            "merchant_account_id": self._merchant_account_id,
            "order_id": request.shop_transaction_id,
            "options": {"submit_for_settlement": True},
        }
        if data.get("nonce"):
            params["payment_method_nonce"] = data["nonce"]
            if data.get("storeInVault"):
                params["options"]["store_in_vault_on_success"] = True
        elif data.get("paymentToken"):
            params["payment_method_token"] = data["paymentToken"]
        if data.get("customerId"):
            customer_id = str(data["customerId"])
            if data.get("nonce") and data.get("storeInVault") and not await self._customer_exists(customer_id):
                # A first-time payer vaulted with this sale: Braintree creates the customer with our id.
                params["customer"] = {"id": customer_id}
            else:
                params["customer_id"] = customer_id
        if data.get("deviceData"):
            params["device_data"] = data["deviceData"]
        if data.get("threeDSecureRequired"):
            # Braintree then rejects a card nonce whose 3-D Secure authentication did not succeed.
            params["options"]["three_d_secure"] = {"required": True}
        result = await self._call(lambda: self._gateway.transaction.sale(params))
        return _sale_result(getattr(result, "transaction", None), result)

    async def schedule_subscription(self, request: PayRequest) -> PayResult:
        """A subscription on the plan providerData.planId at our amount; Braintree bills it by itself."""
        self.check(Operation.SUBSCRIPTION_SCHEDULE, request)
        data = request.provider_data
        plan_id = str(data["planId"])
        try:
            plan = await self._call(lambda: self._gateway.plan.find(_path_id(plan_id)))  # type: ignore[no-untyped-call]  # untyped in the stubs
        except ProviderRejected:
            return PayResult(
                PayResultCode.KO, f"Braintree has no plan {plan_id!r} (create it in the Control Panel)", None
            )
        frequency = getattr(plan, "billing_frequency", None)
        count = request.subscription.interval_count if request.subscription else None
        if count is not None and frequency is not None and int(frequency) != count:
            # The plan decides how often Braintree bills; a different intervalCount would be silently ignored.
            return PayResult(
                PayResultCode.KO,
                f"Braintree plan {plan_id!r} bills every {frequency} month(s), not every {count} as "
                "subscriptionInfo.intervalCount asks",
                None,
            )
        token = data.get("paymentToken")
        if not token:
            token = await self._vault(str(data["customerId"]), str(data["nonce"]))
        params: dict[str, Any] = {
            "plan_id": plan_id,
            "payment_method_token": token,
            "price": amount_text(request.amount),
            "merchant_account_id": self._merchant_account_id,
            "options": {"start_immediately": True},
        }
        expires_after = request.subscription.expires_after if request.subscription else None
        if expires_after:
            params["number_of_billing_cycles"] = expires_after
        else:
            params["never_expires"] = True
        result = await self._call(lambda: self._gateway.subscription.create(params))
        subscription = getattr(result, "subscription", None)
        if not getattr(result, "is_success", False) or subscription is None:
            return PayResult(PayResultCode.KO, _error_message(result), payment_id=None)
        return _subscription_pay_result(subscription)

    async def update_subscription(self, token: str, request: PayRequest) -> SubscriptionLookup:
        """A new price (and number of billing cycles) for the next charges."""
        params: dict[str, Any] = {"price": amount_text(request.amount)}
        expires_after = request.subscription.expires_after if request.subscription else None
        if expires_after:
            params["number_of_billing_cycles"] = expires_after
        result = await self._call(lambda: self._gateway.subscription.update(_path_id(token), params))
        if not getattr(result, "is_success", False):
            raise ProviderRejected(f"Braintree refused the update: {_error_message(result)}")
        return _subscription_lookup(getattr(result, "subscription", None))

    async def subscription_status(self, token: str) -> SubscriptionLookup:
        """Where a subscription stands at Braintree."""
        return _subscription_lookup(await self._call(lambda: self._gateway.subscription.find(_path_id(token))))

    async def expire_subscription(self, token: str, shop_transaction_id: str | None) -> SubscriptionLookup:
        """Cancel a subscription now; an already ended one is left as it is."""
        subscription = await self._call(lambda: self._gateway.subscription.find(_path_id(token)))
        if str(getattr(subscription, "status", "")) in ENDED_SUBSCRIPTIONS:
            return _subscription_lookup(subscription)
        result = await self._call(lambda: self._gateway.subscription.cancel(_path_id(token)))
        if not getattr(result, "is_success", False):
            raise ProviderRejected(f"Braintree refused to cancel the subscription: {_error_message(result)}")
        return _subscription_lookup(getattr(result, "subscription", None))

    async def refund(self, request: RefundRequest) -> RefundResult:
        """Void the whole sale before settlement, refund (part of) it afterwards."""
        sale = await self._call(lambda: self._gateway.transaction.find(_path_id(request.payment_id)))
        status = str(getattr(sale, "status", ""))
        paid = minor_units(getattr(sale, "amount", None))
        if status in VOIDABLE:
            if paid != request.amount:
                return RefundResult(
                    Status.FAILED,
                    None,
                    f"Braintree has not settled this payment yet ({status}): it can only be voided as a whole "
                    f"({paid}), not refunded in part; refund it once it settles",
                )
            result = await self._call(lambda: self._gateway.transaction.void(request.payment_id))
            if not getattr(result, "is_success", False):
                return RefundResult(Status.FAILED, None, f"Braintree refused the void: {_error_message(result)}")
            return RefundResult(
                Status.ACCEPTED, f"void-{request.payment_id}", "The payment was voided before settlement"
            )
        if status not in REFUNDABLE:
            return RefundResult(Status.FAILED, None, f"Braintree cannot refund a payment that is {status}")
        options = {"amount": amount_text(request.amount), "order_id": request.idempotency_key}
        result = await self._call(lambda: self._gateway.transaction.refund(request.payment_id, options))
        credit = getattr(result, "transaction", None)
        if not getattr(result, "is_success", False) or credit is None:
            return RefundResult(Status.FAILED, None, f"Braintree refused the refund: {_error_message(result)}")
        return _refund_result(credit)

    async def payment_status(self, payment_id: str) -> PaymentLookup:
        """Look a sale up (a subscription's payment id is its first sale)."""
        return _sale_lookup(await self._call(lambda: self._gateway.transaction.find(_path_id(payment_id))))

    async def payment_details(self, payment_id: str) -> PaymentLookup:
        """The lookup, with the refunds Braintree already executed (a payment made before the switch is
        adopted with them, so what is left to refund is checked here)."""
        sale = await self._call(lambda: self._gateway.transaction.find(_path_id(payment_id)))
        lookup = _sale_lookup(sale)
        if lookup.status is not Status.ACCEPTED:
            return lookup
        succeeded = [(r.refund_id, r.amount) for r in await self._credits(sale) if r.status is Status.ACCEPTED]
        return replace(lookup, refunded_amount=sum(amount for _, amount in succeeded), refunds=tuple(succeeded))

    async def list_refunds(self, payment_id: str) -> list[ListedRefund]:
        """The sale's refunds (credit transactions), however they were made: the Control Panel's too."""
        return await self._credits(await self._call(lambda: self._gateway.transaction.find(_path_id(payment_id))))

    async def _credits(self, sale: Any) -> list[ListedRefund]:
        """The credit transactions a sale names in `refund_ids`, each looked up for its amount and status."""
        listed: list[ListedRefund] = []
        for credit_id in list(getattr(sale, "refund_ids", None) or []):
            credit = await self._call(functools.partial(self._gateway.transaction.find, _path_id(str(credit_id))))
            amount = minor_units(getattr(credit, "amount", None))
            status = REFUND_STATUS.get(str(getattr(credit, "status", "")))
            if status is not None and amount is not None:
                listed.append(ListedRefund(str(credit.id), amount, status))
        return listed

    async def find_payment(self, idempotency_key: str, shop_transaction_id: str) -> PaymentLookup | None:
        """Find the sale a lost answer created: Braintree has no idempotency keys, so by its order id."""
        since = self._now() - LOOKBACK

        def search() -> list[Any]:
            found = self._gateway.transaction.search(
                braintree.TransactionSearch.order_id == shop_transaction_id,
                braintree.TransactionSearch.type == braintree.Transaction.Type.Sale,
                braintree.TransactionSearch.created_at >= since,
            )
            return list(found.items)

        sales = await self._call(search)
        if not sales:
            return None
        if len(sales) > 1:
            # Several sales for one order (a retry after a refusal): which one this attempt made is unknowable.
            ids = ", ".join(str(getattr(sale, "id", "?")) for sale in sales)
            raise OutcomeUnknown(f"Braintree holds several sales for order {shop_transaction_id} ({ids})")
        return _sale_lookup(sales[0])

    async def refund_status(self, payment_id: str, refund_id: str | None, idempotency_key: str) -> RefundResult | None:
        """A refund by its id, else among the sale's refunds by the order id it was created with."""
        if refund_id and refund_id.startswith("void-"):
            sale = await self._call(lambda: self._gateway.transaction.find(_path_id(payment_id)))
            voided = str(getattr(sale, "status", "")) == "voided"
            return RefundResult(Status.ACCEPTED, refund_id, "The payment was voided") if voided else None
        if refund_id:
            return _refund_result(await self._call(lambda: self._gateway.transaction.find(_path_id(refund_id))))
        sale = await self._call(lambda: self._gateway.transaction.find(_path_id(payment_id)))
        for credit_id in list(getattr(sale, "refund_ids", None) or []):
            credit = await self._call(functools.partial(self._gateway.transaction.find, _path_id(str(credit_id))))
            if getattr(credit, "order_id", None) == idempotency_key:
                return _refund_result(credit)
        if str(getattr(sale, "status", "")) == "voided":
            # A void carries no order id: the only refund it can be is the whole one.
            return RefundResult(Status.ACCEPTED, f"void-{payment_id}", "The payment was voided")
        return None

    async def parse_callback(self, callback: CallbackRequest) -> list[Notification]:
        """A webhook: `bt_signature` and `bt_payload` form fields, verified and parsed by the SDK."""
        fields = {key: values[0] for key, values in parse_qs(callback.body.decode("latin-1")).items() if values}
        signature = fields.get("bt_signature") or callback.query.get("bt_signature")
        payload = fields.get("bt_payload") or callback.query.get("bt_payload")
        if not signature or not payload:
            raise InvalidCallback("a Braintree webhook carries bt_signature and bt_payload")
        try:
            notification = self._gateway.webhook_notification.parse(signature, payload)
        except (BraintreeError, ExpatError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InvalidCallback(
                f"the Braintree webhook is not authentic or not readable ({type(exc).__name__})"
            ) from exc
        # Braintree sends no event id: the signed payload itself identifies a delivery (duplicates dedupe).
        event_id = "bt-" + hashlib.sha256(payload.strip().encode("ascii", "replace")).hexdigest()[:40]
        status = TRANSACTION_EVENTS.get(str(getattr(notification, "kind", "")))
        transaction = getattr(notification, "transaction", None)
        if status is None or transaction is None or not getattr(transaction, "id", None):
            return []
        if getattr(transaction, "subscription_id", None):
            return []
        return [Notification(event_id, Subject.PAYMENT, payment_id=str(transaction.id), status=status)]

    def callback_answer(self) -> CallbackAnswer:
        """Braintree needs a 2xx."""
        return CallbackAnswer(200, b"", "text/plain")

    # ----- the existing PGM's Braintree utilities (/v3/braintree/utility/...) -----

    async def client_token(self, customer_id: str | None) -> tuple[str, bool]:
        """A client token for Braintree's client SDK, and whether the customer has a vaulted method.

        An unknown customer gets a token without one (Braintree refuses a token for an unknown customer)."""
        vaulted = False
        params: dict[str, Any] = {"merchant_account_id": self._merchant_account_id}
        if customer_id:
            try:
                customer = await self._call(lambda: self._gateway.customer.find(_path_id(customer_id)))
            except ProviderRejected:
                customer = None
            if customer is not None:
                params["customer_id"] = customer_id
                vaulted = bool(list(getattr(customer, "payment_methods", None) or []))
        token = await self._call(lambda: self._gateway.client_token.generate(params))
        if not isinstance(token, str) or not token:
            raise OutcomeUnknown("Braintree answered a client token that is empty")
        return token, vaulted

    async def create_customer(self, customer_id: str, nonce: str) -> dict[str, Any]:
        """Vault the payer: a customer with this id and the payment method of the nonce."""
        params = {"id": customer_id, "payment_method_nonce": nonce}
        result = await self._call(lambda: self._gateway.customer.create(params))
        if not getattr(result, "is_success", False):
            raise ProviderRejected(f"Braintree refused the customer: {_error_message(result)}")
        customer = getattr(result, "customer", None)
        if customer is None or not getattr(customer, "id", None):
            raise OutcomeUnknown("Braintree answered a new customer without its id")
        methods = list(getattr(customer, "payment_methods", None) or [])
        return {
            "customerId": str(customer.id),
            "paymentToken": str(methods[0].token) if methods and getattr(methods[0], "token", None) else None,
        }

    async def submit_for_settlement(self, transaction_id: str) -> PaymentLookup:
        """Submit an authorized sale for settlement (sales made here are submitted already)."""
        result = await self._call(lambda: self._gateway.transaction.submit_for_settlement(_path_id(transaction_id)))
        if not getattr(result, "is_success", False):
            raise ProviderRejected(f"Braintree refused to submit the payment: {_error_message(result)}")
        return _sale_lookup(getattr(result, "transaction", None))

    # ----- plumbing -----

    async def _customer_exists(self, customer_id: str) -> bool:
        try:
            await self._call(lambda: self._gateway.customer.find(_path_id(customer_id)))
        except ProviderRejected:
            return False
        return True

    async def _vault(self, customer_id: str, nonce: str) -> str:
        """A payment method token for the nonce, stored on the customer (a subscription needs one)."""
        params = {"customer_id": customer_id, "payment_method_nonce": nonce}
        result = await self._call(lambda: self._gateway.payment_method.create(params))
        method = getattr(result, "payment_method", None)
        if not getattr(result, "is_success", False) or method is None or not getattr(method, "token", None):
            raise ProviderRejected(f"Braintree refused to vault the payment method: {_error_message(result)}")
        return str(method.token)

    async def _call(self, call: Callable[[], T]) -> T:
        """Run an SDK call in a worker thread; its failures as our three outcomes."""
        try:
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except (AuthenticationError, AuthorizationError) as exc:
            raise ProviderRejected(
                "Braintree refused the API keys: check BRAINTREE_MERCHANT_ID, BRAINTREE_PUBLIC_KEY and "
                "BRAINTREE_PRIVATE_KEY"
            ) from exc
        except NotFoundError as exc:
            raise ProviderRejected("Braintree has no such object") from exc
        except UpgradeRequiredError as exc:
            raise ProviderRejected("Braintree refused this SDK version (HTTP 426)") from exc
        except (BraintreeError, RequestException, ExpatError, KeyError, AttributeError) as exc:
            # Time-outs, lost connections, 5xx, 429 and unreadable answers: the call may or may not have run.
            raise OutcomeUnknown(f"Braintree did not answer usably ({type(exc).__name__})") from exc
        except ValueError as exc:
            # The SDK raises ValueError for a refusal it has no result object for (client tokens).
            raise ProviderRejected(f"Braintree refused the request: {exc}") from exc


def _path_id(identifier: str) -> str:
    # The SDK refuses ids that are not a plain path segment; an id we never issued is simply unknown.
    if not identifier or "/" in identifier or identifier.strip() != identifier or len(identifier) > ORDER_ID_MAX:
        raise ProviderRejected(f"{identifier!r} is not a Braintree id")
    return identifier


def _error_message(result: Any) -> str:
    message = getattr(result, "message", None)
    return str(message) if message else "no reason given"


def _sale_result(transaction: Any, result: Any) -> PayResult:
    """A sale's answer: a success, or a refusal with (declined) or without (invalid request) a transaction."""
    if transaction is None:
        if getattr(result, "is_success", False):
            raise OutcomeUnknown("Braintree answered a successful sale without the transaction")
        return PayResult(PayResultCode.KO, f"Braintree refused the payment: {_error_message(result)}", payment_id=None)
    status = TRANSACTION_STATUS.get(str(getattr(transaction, "status", "")))
    if status is None:
        raise OutcomeUnknown(f"Braintree answered a sale with the unknown status {transaction.status!r}")
    metadata = _sale_metadata(transaction)
    if status is Status.ACCEPTED:
        return PayResult(PayResultCode.OK, "The payment was executed", str(transaction.id), metadata=metadata)
    if status is Status.PENDING:
        return PayResult(
            PayResultCode.PENDING, "Braintree is authorizing the payment", str(transaction.id), metadata=metadata
        )
    return PayResult(PayResultCode.KO, _refusal(transaction, result), str(transaction.id), metadata=metadata)


def _refusal(transaction: Any, result: Any) -> str:
    status = str(getattr(transaction, "status", ""))
    if status == "gateway_rejected":
        reason = getattr(transaction, "gateway_rejection_reason", None)
        if reason == "three_d_secure":
            return "Braintree rejected the payment: 3-D Secure authentication did not succeed"
        return f"Braintree rejected the payment ({reason or 'gateway_rejected'})"
    if status == "processor_declined":
        text = getattr(transaction, "processor_response_text", None) or _error_message(result)
        code = getattr(transaction, "processor_response_code", None)
        return f"The payment was declined ({code}: {text})" if code else f"The payment was declined ({text})"
    return f"The payment failed at Braintree ({status})"


def _sale_metadata(transaction: Any) -> dict[str, Any]:
    metadata = {
        "braintreeStatus": getattr(transaction, "status", None),
        "paymentInstrumentType": getattr(transaction, "payment_instrument_type", None),
        "subscriptionToken": getattr(transaction, "subscription_id", None),
    }
    return {key: str(value) for key, value in metadata.items() if value}


def _sale_lookup(transaction: Any) -> PaymentLookup:
    if not getattr(transaction, "id", None):
        raise OutcomeUnknown("Braintree answered a transaction without an id")
    if str(getattr(transaction, "type", "sale")) != "sale":
        raise ProviderRejected(f"Braintree transaction {transaction.id} is a refund, not a payment")
    status = TRANSACTION_STATUS.get(str(getattr(transaction, "status", "")))
    if status is None:
        raise OutcomeUnknown(f"Braintree answered a transaction with the unknown status {transaction.status!r}")
    metadata = _sale_metadata(transaction)
    refunded = list(getattr(transaction, "refund_ids", None) or [])
    if refunded:
        metadata["refundIds"] = ",".join(str(r) for r in refunded)
    instrument = str(getattr(transaction, "payment_instrument_type", "") or "")
    currency = getattr(transaction, "currency_iso_code", None)
    return PaymentLookup(
        status=status,
        payment_id=str(transaction.id),
        currency=str(currency).upper() if currency else None,
        payment_method=PAYMENT_METHODS.get(instrument),
        shop_transaction_id=getattr(transaction, "order_id", None) or None,
        amount=minor_units(getattr(transaction, "amount", None)),
        subscription_token=getattr(transaction, "subscription_id", None) or None,
        metadata=metadata,
    )


def _refund_result(credit: Any) -> RefundResult:
    status = REFUND_STATUS.get(str(getattr(credit, "status", "")))
    if status is None or not getattr(credit, "id", None):
        raise OutcomeUnknown("Braintree answered a refund without an id or a known status")
    descriptions = {
        Status.ACCEPTED: "The refund was executed",
        Status.PENDING: "Braintree accepted the refund; its outcome comes later",
        Status.FAILED: f"The refund failed at Braintree ({credit.status})",
    }
    return RefundResult(status, str(credit.id), descriptions[status])


def _subscription_pay_result(subscription: Any) -> PayResult:
    """A new subscription: its first sale is the payment (its id the paymentId), the subscription the token."""
    token = str(subscription.id)
    charges = list(getattr(subscription, "transactions", None) or [])
    state = SUBSCRIPTION_STATE.get(str(getattr(subscription, "status", "")), SubscriptionState.UNKNOWN)
    metadata = {"subscriptionToken": token, "subscriptionStatus": str(getattr(subscription, "status", ""))}
    if not charges:
        raise OutcomeUnknown(f"Braintree answered subscription {token} ({state.value}) without its first charge")
    # Braintree lists a subscription's sales newest first: the only one of a new subscription is its first.
    first = _sale_result(charges[-1], None)
    return PayResult(
        first.result,
        "The subscription was created and its first payment executed"
        if first.result is PayResultCode.OK
        else first.description,
        first.payment_id,
        subscription_token=token,
        metadata={**first.metadata, **metadata},
    )


def _subscription_lookup(subscription: Any) -> SubscriptionLookup:
    if not getattr(subscription, "id", None):
        raise OutcomeUnknown("Braintree answered a subscription without an id")
    status = str(getattr(subscription, "status", ""))
    metadata = {
        "braintreeStatus": status,
        "planId": getattr(subscription, "plan_id", None),
        "price": minor_units(getattr(subscription, "price", None)),
        "numberOfBillingCycles": getattr(subscription, "number_of_billing_cycles", None),
        "currentBillingCycle": getattr(subscription, "current_billing_cycle", None),
        "nextBillingDate": str(getattr(subscription, "next_billing_date", "") or "") or None,
    }
    return SubscriptionLookup(
        status=SUBSCRIPTION_STATE.get(status, SubscriptionState.UNKNOWN),
        token=str(subscription.id),
        metadata={key: value for key, value in metadata.items() if value is not None},
    )


def _optional_text(data: Mapping[str, Any], name: str, limit: int) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit:
        raise InvalidProviderData(
            f"providerData.{name} must be a non-empty string of at most {limit} characters",
            field=f"providerData.{name}",
        )
    return value


def _optional_id(data: Mapping[str, Any], name: str) -> str | None:
    value = _optional_text(data, name, ID_MAX)
    if value is not None and not all(c.isalnum() or c in "-_" for c in value):
        raise InvalidProviderData(
            f"providerData.{name} may hold letters, digits, - and _ only (Braintree ids)", field=f"providerData.{name}"
        )
    return value


def _required_id(data: Mapping[str, Any], name: str) -> str:
    value = _optional_id(data, name)
    if value is None:
        raise InvalidProviderData(f"providerData.{name} is required", field=f"providerData.{name}")
    return value


def _optional_bool(data: Mapping[str, Any], name: str) -> bool:
    value = data.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidProviderData(f"providerData.{name} must be true or false", field=f"providerData.{name}")
    return value
