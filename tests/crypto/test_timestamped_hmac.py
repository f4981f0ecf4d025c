"""The `t=..,v1=..` signature (sandbox callbacks, Stripe webhooks): known answers and refusals."""

from __future__ import annotations

import hashlib
import hmac

import pytest
import stripe

from pgm.crypto import timestamped_hmac

SECRET = "whsec_test"
BODY = b'{"id":"evt_1","type":"payment.updated"}'
# Known answer (HMAC-SHA256 of "1700000000." + BODY with SECRET), computed outside the module under test.
EXPECTED = "34b18722467c5dbe2d7f098549fa8521b6320ef3e52b5869c24b00d5d2733bff"


def test_known_answer() -> None:
    assert timestamped_hmac.compute(SECRET, 1700000000, BODY) == EXPECTED
    assert timestamped_hmac.header(SECRET, 1700000000, BODY) == f"t=1700000000,v1={EXPECTED}"
    assert hmac.new(SECRET.encode(), b"1700000000." + BODY, hashlib.sha256).hexdigest() == EXPECTED


def test_valid_signature_within_tolerance_is_accepted() -> None:
    header = timestamped_hmac.header(SECRET, 1700000000, BODY)
    assert timestamped_hmac.verify(header, BODY, ["old", SECRET], now=1700000299, tolerance_seconds=300) == 1700000000


@pytest.mark.parametrize(
    ("header", "body", "now", "message"),
    [
        (None, BODY, 1700000000, "missing"),
        ("v1=abc", BODY, 1700000000, "no timestamp"),
        ("t=abc,v1=abc", BODY, 1700000000, "not an integer"),
        (f"t=1700000000,v1={EXPECTED}", BODY, 1700000301, "older than"),
        (f"t=1700000000,v1={EXPECTED}", BODY + b" ", 1700000000, "does not match"),
        ("t=1700000000,v1=" + "0" * 64, BODY, 1700000000, "does not match"),
    ],
)
def test_bad_signatures_are_refused(header: str | None, body: bytes, now: int, message: str) -> None:
    with pytest.raises(timestamped_hmac.SignatureError, match=message):
        timestamped_hmac.verify(header, body, [SECRET], now=now, tolerance_seconds=300)


def test_matches_stripes_own_implementation() -> None:
    header = timestamped_hmac.header(SECRET, 1700000000, BODY)
    assert stripe.WebhookSignature.verify_header(BODY.decode(), header, SECRET, tolerance=None)
    forged = timestamped_hmac.header("whsec_other", 1700000000, BODY)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.WebhookSignature.verify_header(BODY.decode(), forged, SECRET, tolerance=None)
