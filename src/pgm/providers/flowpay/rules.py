"""What both FlowPay API generations accept (docs/providers/flowpay.md): the one payment method, the
operations offered, and the checks made on a request before anything is stored or sent."""

from __future__ import annotations

import re

from pgm.providers.base import Capabilities, InvalidProviderData, Operation, PayRequest, RefundRequest

PAYMENT_METHOD = "wire-transfer"
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
# Italian fiscal codes: 16 characters for a person, 11 digits (the VAT number) for a company.
_FISCAL_CODE = re.compile(r"^([A-Z0-9]{16}|[0-9]{11})$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})?)?$")
REMITTANCE_MAX_LENGTH = 140

CAPABILITIES = Capabilities(
    operations=frozenset({Operation.PAY, Operation.STATUS, Operation.CALLBACK}),
    payment_methods=frozenset({PAYMENT_METHOD}),
    currencies=frozenset({"EUR"}),
    default_payment_method=PAYMENT_METHOD,
)


def check_request(request: PayRequest | RefundRequest) -> None:
    """Refuse what FlowPay (either generation) would refuse, before anything is stored."""
    if isinstance(request, RefundRequest):
        return
    if not request.success_redirect_url:
        raise InvalidProviderData(
            "successRedirectUrl is required: FlowPay's checkout sends the payer back to it",
            field="successRedirectUrl",
        )
    data = request.provider_data
    for name in ("debtorFiscalCode", "creditorFiscalCode"):
        value = data.get(name)
        if not isinstance(value, str) or not _FISCAL_CODE.match(value):
            raise InvalidProviderData(
                f"providerData.{name} is required: an Italian fiscal code (16 chars) or VAT number (11 digits)",
                field=f"providerData.{name}",
            )
    iban = data.get("creditorIban")
    if not isinstance(iban, str) or not _IBAN.match(iban):
        raise InvalidProviderData(
            "providerData.creditorIban is required: the IBAN the transfer is credited to, upper case, no spaces",
            field="providerData.creditorIban",
        )
    remittance = data.get("remittanceDescription")
    if remittance is not None and (
        not isinstance(remittance, str) or not remittance.strip() or len(remittance) > REMITTANCE_MAX_LENGTH
    ):
        raise InvalidProviderData(
            f"providerData.remittanceDescription must be text of at most {REMITTANCE_MAX_LENGTH} characters",
            field="providerData.remittanceDescription",
        )
    date = data.get("transferDate")
    if date is not None and (not isinstance(date, str) or not _DATE_TIME.match(date)):
        raise InvalidProviderData(
            "providerData.transferDate must be an ISO-8601 date or date-time without milliseconds",
            field="providerData.transferDate",
        )
