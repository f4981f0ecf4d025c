"""Amounts are integers in minor units with an ISO 4217 currency; nothing else is money here."""

from __future__ import annotations

import re

# ISO 4217 active codes. Providers narrow this set through their capabilities.
# fmt: off
ISO_4217 = frozenset([
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN",
    "BHD", "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF",
    "CLP", "CNY", "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB",
    "EUR", "FJD", "FKP", "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG",
    "HUF", "IDR", "ILS", "INR", "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF",
    "KPW", "KRW", "KWD", "KYD", "KZT", "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA",
    "MKD", "MMK", "MNT", "MOP", "MRU", "MUR", "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO",
    "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK", "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD",
    "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD", "SHP", "SLE", "SOS", "SRD", "SSP", "STN",
    "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY", "TTD", "TWD", "TZS", "UAH", "UGX",
    "USD", "UYU", "UZS", "VES", "VND", "VUV", "WST", "XAF", "XCD", "XOF", "XPF", "YER", "ZAR", "ZMW",
    "ZWL",
])
# fmt: on

# Larger than any real payment in minor units, small enough for every database integer column.
MAX_AMOUNT = 10**15

_CURRENCY_SHAPE = re.compile(r"^[A-Z]{3}$")


def currency_problem(code: str) -> str | None:
    """Why `code` is not a usable ISO 4217 currency, or None when it is."""
    if not _CURRENCY_SHAPE.match(code):
        return f"currency must be a three-letter ISO 4217 code in upper case, got {code!r}"
    if code not in ISO_4217:
        return f"currency {code!r} is not an ISO 4217 code"
    return None


def amount_problem(amount: object) -> str | None:
    """Why `amount` is not a positive integer amount in minor units, or None when it is."""
    if isinstance(amount, bool) or not isinstance(amount, int):
        return "amount must be an integer in minor units (1299 means 12.99)"
    if amount <= 0:
        return "amount must be greater than zero"
    if amount > MAX_AMOUNT:
        return f"amount must not exceed {MAX_AMOUNT}"
    return None
