"""Satispay request signing: HTTP Signatures (Cavage draft-10) with RSA-SHA256, as the GBusiness API
documents it ("Authentication": create the digest, create the string, sign the string, compose the
header). Written with `cryptography` because no maintained Python SDK exists.

Every request, GET included, carries `Digest` (SHA-256 of the body, empty string when there is none),
`Date` (RFC 2822) and `Authorization: Signature keyId=..., algorithm="rsa-sha256", headers="...",
signature=...`, where the signature covers "(request-target) host date digest" in that order.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import textwrap
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from pgm.outbound import Request, host_header

SIGNED_HEADERS = ("(request-target)", "host", "date", "digest")
_PEM = re.compile(r"-----BEGIN ([A-Z ]+)-----(.*?)-----END \1-----", re.DOTALL)


class UnusableKey(ValueError):
    """The configured private key cannot be used; the message never contains key material."""


def digest(body: bytes) -> str:
    """The `Digest` header value: `SHA-256=` + base64(sha256(body)); an empty body hashes the empty string."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def http_date(now: float) -> str:
    """The `Date` header value in the documented RFC 2822 form, e.g. `Mon, 18 Mar 2019 15:10:24 +0000`."""
    return format_datetime(datetime.fromtimestamp(int(now), tz=UTC))


def signing_string(method: str, target: str, host: str, date: str, body_digest: str) -> str:
    """The message to sign: one `name: value` line per signed header, in the order of SIGNED_HEADERS."""
    return "\n".join(
        [
            f"(request-target): {method.lower()} {target}",
            f"host: {host}",
            f"date: {date}",
            f"digest: {body_digest}",
        ]
    )


def sign(private_key: rsa.RSAPrivateKey, message: str) -> str:
    """Base64 of RSA-SHA256 (PKCS#1 v1.5) over the message: deterministic for a given key and message."""
    raw = private_key.sign(message.encode("utf-8"), padding.PKCS1v15(), hashes.SHA256())
    return base64.b64encode(raw).decode("ascii")


def authorization(key_id: str, signature: str) -> str:
    """The `Authorization` header value."""
    return (
        f'Signature keyId="{key_id}", algorithm="rsa-sha256", '
        f'headers="{" ".join(SIGNED_HEADERS)}", signature="{signature}"'
    )


def load_private_key(text: str) -> rsa.RSAPrivateKey:
    """Read an RSA private key given as PEM, as PEM whose newlines became single spaces (how the existing
    PGM documents SATISPAY_PRIVATE_KEY), as PEM with literal `\\n`, or as bare base64 DER."""
    candidate = text.strip().replace("\\n", "\n")
    match = _PEM.search(candidate)
    if match:
        label, body = match.group(1), match.group(2)
        # Spaces or newlines inside the base64 body are both just separators: rebuild a canonical PEM.
        packed = "".join(body.split())
        pem = f"-----BEGIN {label}-----\n" + "\n".join(textwrap.wrap(packed, 64)) + f"\n-----END {label}-----\n"
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise UnusableKey("is not a readable unencrypted PEM private key") from exc
    else:
        try:
            der = base64.b64decode("".join(candidate.split()), validate=True)
            key = serialization.load_der_private_key(der, password=None)
        except (ValueError, TypeError, binascii.Error, UnsupportedAlgorithm) as exc:
            raise UnusableKey("is neither PEM nor base64 DER of a private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey):
        raise UnusableKey("is not an RSA key (Satispay signs with rsa-sha256)")
    return key


class SatispaySignature:
    """A request hook of the HTTP client that signs each request exactly as it is sent (host, path, query,
    body): the Host header is set here, so what is signed is what goes out."""

    def __init__(self, key_id: str, private_key: rsa.RSAPrivateKey, clock: Callable[[], float] = time.time) -> None:
        self._key_id = key_id
        self._private_key = private_key
        self._clock = clock

    def __call__(self, request: Request) -> None:
        """Add Host, Digest, Date and Authorization."""
        body_digest = digest(request.content)
        date = http_date(self._clock())
        host = request.headers.setdefault("Host", host_header(request.url))
        message = signing_string(request.method, request.url.raw_path_qs, host, date, body_digest)
        request.headers["Digest"] = body_digest
        request.headers["Date"] = date
        request.headers["Authorization"] = authorization(self._key_id, sign(self._private_key, message))
