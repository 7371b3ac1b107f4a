"""Who is calling: API key -> tenant and scopes; per-caller rate limits. Every /v1 route passes here.

The tenant comes from the key, never from the request, so every read and write is scoped by it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from flask import Flask, g, request

from api.errors import ApiError
from imagesearch.apikeys import KeyRing, RateLimiter
from imagesearch.config import Settings
from imagesearch.records import DEFAULT_TENANT
from imagesearch.services import Services
from schemas.api import ErrorOut

# Routes with their own authentication (webhook token, SNS signatures).
_SELF_AUTHENTICATED = ("/v1/events/",)

# What the check below can answer on any /v1 route it guards, in keys mode: spread into each such
# route's ``Resp(...)`` so the document lists them (``Resp(HTTP_200=..., **AUTH_RESPONSES)``).
AUTH_RESPONSES = {
    "HTTP_401": (ErrorOut, "No API key, or an unknown or revoked one (keys mode)."),
    "HTTP_403": (ErrorOut, "The API key lacks the scope this route needs."),
    "HTTP_429": (ErrorOut, "More requests this minute than the key may make; Retry-After says when to retry."),
}


@dataclass(frozen=True)
class Caller:
    tenant: str
    scopes: tuple[str, ...]
    key_name: str | None  # None in open mode
    key_id: str | None = None  # a prefix of the key's hash: what rate limits count by

    def allows(self, scope: str) -> bool:
        return scope in self.scopes or "admin" in self.scopes


def is_open(settings: Settings) -> bool:
    if settings.api.auth != "auto":
        return settings.api.auth == "open"
    if not settings.api.bind_host:
        return False  # unknown bind address: assume reachable from elsewhere
    if settings.api.bind_host == "localhost":
        return True
    try:
        return ipaddress.ip_address(settings.api.bind_host).is_loopback
    except ValueError:
        return False


class Access:
    def __init__(self, services: Services) -> None:
        self.settings = services.settings
        self.open = is_open(services.settings)
        self.keys: KeyRing = services.keyring
        self.limiter: RateLimiter = services.rate_limiter

    def identify(self) -> Caller:
        if self.open:
            return Caller(DEFAULT_TENANT, ("read", "write", "admin"), None)
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("X-API-Key", "")
        if not token:
            raise ApiError(401, "unauthorized", "send an API key: 'Authorization: Bearer <key>' or 'X-API-Key'")
        key = self.keys.lookup(token)
        if key is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key")
        return Caller(key.tenant, key.scopes, key.name, key.key_hash[:16])


def required_scope() -> str:
    if request.path.startswith("/v1/admin"):
        return "admin"
    if request.method in ("GET", "HEAD", "OPTIONS") or request.path == "/v1/search":
        return "read"
    return "write"


def caller() -> Caller:
    return g.caller


def register(app: Flask, services: Services) -> None:
    access = Access(services)
    settings = services.settings
    app.extensions["imagesearch.access"] = access

    @app.before_request
    def _authenticate():
        if not request.path.startswith("/v1/") or request.path.startswith(_SELF_AUTHENTICATED):
            return None
        who = access.identify()
        scope = required_scope()
        if not who.allows(scope):
            raise ApiError(403, "forbidden", f"this key lacks the '{scope}' scope")
        g.caller = who
        if who.key_name is None:
            return None  # open mode is for local use: no keys, so no per-key limit
        allowed, remaining, reset = access.limiter.hit(f"key:{who.key_id}")
        g.rate = (remaining, reset)
        if not allowed:
            raise ApiError(429, "rate_limited", f"more than {settings.api.rate_limit_per_minute} requests a minute; "
                                                f"retry in {reset} s", retry_after=reset)
        return None

    @app.after_request
    def _rate_headers(response):
        rate = g.get("rate")
        if rate is not None:
            response.headers["X-RateLimit-Limit"] = str(settings.api.rate_limit_per_minute)
            response.headers["X-RateLimit-Remaining"] = str(rate[0])
        return response
