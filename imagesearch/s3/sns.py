"""SNS signature verification for envelopes that arrive over HTTP (``POST /v1/events/sns``).

:class:`SnsVerifier` checks SignatureVersion 1 (SHA1) and 2 (SHA256) signatures with the
certificate at ``SigningCertURL``, which must be https on an SNS host (``sns.<region>.amazonaws.com``
or ``.com.cn``), and the topic against an allowlist. Fetching the certificate is a function the
caller may replace (tests serve a local certificate); the URL rule applies either way.
"""

from __future__ import annotations

import base64
import binascii
import re
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from imagesearch.errors import PermanentError

SNS_HOST = re.compile(r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$")
SNS_TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_SIGNED_FIELDS = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
_MAX_CERT_BYTES = 64 * 1024


_STRING_FIELDS = tuple(sorted({name for names in _SIGNED_FIELDS.values() for name in names}
                              | {"SignatureVersion", "Signature", "SigningCertURL"}))


class SnsVerificationError(PermanentError):
    """The envelope is not provably from SNS for an allowed topic. ``code`` says which check failed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def check_sns_url(url: Any) -> str:
    """``url`` if it is https on an SNS host (no credentials, default port), else SnsVerificationError."""
    if not isinstance(url, str):
        raise SnsVerificationError("invalid_cert_url", "the URL is missing")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise SnsVerificationError("invalid_cert_url", f"malformed URL {url!r}") from exc
    host = parts.hostname or ""
    if parts.scheme != "https" or parts.username or parts.password or port not in (None, 443) \
            or not SNS_HOST.match(host) or parts.netloc.lower() not in (host, f"{host}:443"):
        raise SnsVerificationError("invalid_cert_url", f"{url!r} is not an https URL on an SNS host")
    return url


def default_fetch_cert(url: str) -> bytes:
    """Download the signing certificate (TLS-verified; the URL was checked first)."""
    import requests

    try:
        with requests.get(url, timeout=10, stream=True, allow_redirects=False) as response:
            response.raise_for_status()
            data = response.raw.read(_MAX_CERT_BYTES + 1, decode_content=True)
    except requests.RequestException as exc:
        raise SnsVerificationError("cert_unavailable", f"cannot fetch the signing certificate: {exc}") from exc
    if len(data) > _MAX_CERT_BYTES:
        raise SnsVerificationError("invalid_cert", "the signing certificate is implausibly large")
    return data


def string_to_sign(envelope: dict) -> bytes:
    """The canonical text SNS signs: ``name\\nvalue\\n`` for each signed field present, in order."""
    kind = envelope.get("Type")
    if kind not in _SIGNED_FIELDS:
        raise SnsVerificationError("invalid_message", f"unknown SNS message type {kind!r}")
    lines: list[str] = []
    for name in _SIGNED_FIELDS[kind]:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        if not isinstance(value, str):
            raise SnsVerificationError("invalid_message", f"the SNS message has no {name}")
        lines += [name, value]
    return ("\n".join(lines) + "\n").encode("utf-8")


class SnsVerifier:
    """Verifies SNS envelopes: signature, certificate URL, topic allowlist. Certificates are cached."""

    def __init__(self, topic_allowlist: Iterable[str], fetch_cert: Callable[[str], bytes] | None = None,
                 cache_seconds: float = 3600.0) -> None:
        self.topics = frozenset(t for t in topic_allowlist if t)
        self.fetch_cert = fetch_cert or default_fetch_cert
        self.cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def verify(self, envelope: Any) -> dict:
        """The envelope when every check passes; SnsVerificationError naming the first that fails."""
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        if not isinstance(envelope, dict) or envelope.get("Type") not in SNS_TYPES:
            raise SnsVerificationError("invalid_message", "not an SNS message")
        # Every field read below is a string in a real envelope (or absent/null); anything else
        # (`"TopicArn": {}`) is refused here, before a set lookup or a dict key could raise TypeError.
        for name in _STRING_FIELDS:
            value = envelope.get(name)
            if value is not None and not isinstance(value, str):
                raise SnsVerificationError("invalid_message", f"the SNS message's {name} is not a string")
        topic = envelope.get("TopicArn")
        if topic not in self.topics:  # checked before anything is fetched for it
            raise SnsVerificationError("topic_not_allowed", f"topic {topic!r} is not in the allowlist")
        version = envelope.get("SignatureVersion")
        algorithm = {"1": hashes.SHA1, "2": hashes.SHA256}.get(version)
        if algorithm is None:
            raise SnsVerificationError("invalid_signature", f"unsupported SignatureVersion {version!r}")
        try:
            signature = base64.b64decode(_string_or_error(envelope.get("Signature")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise SnsVerificationError("invalid_signature", "the signature is not base64") from exc
        message = string_to_sign(envelope)
        public_key = self._public_key(check_sns_url(envelope.get("SigningCertURL")))
        if not isinstance(public_key, rsa.RSAPublicKey):
            raise SnsVerificationError("invalid_cert", "the signing certificate does not hold an RSA key")
        try:
            public_key.verify(signature, message, padding.PKCS1v15(), algorithm())
        except InvalidSignature:
            raise SnsVerificationError("invalid_signature", "the signature does not match the message") from None
        return envelope

    def _public_key(self, url: str) -> Any:
        from cryptography import x509

        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(url)
        if cached and now - cached[0] < self.cache_seconds:
            certificate = cached[1]
        else:
            pem = self.fetch_cert(url)
            try:
                certificate = x509.load_pem_x509_certificate(pem)
            except ValueError as exc:
                raise SnsVerificationError("invalid_cert", f"the signing certificate cannot be read: {exc}") from exc
            with self._lock:
                self._cache[url] = (now, certificate)
        moment = datetime.now(UTC)
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            raise SnsVerificationError("invalid_cert", "the signing certificate is not valid now")
        return certificate.public_key()


def _string_or_error(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise SnsVerificationError("invalid_signature", "the message has no signature")
    return value
