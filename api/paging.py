"""Search page tokens: opaque to clients, bound to the query that made them.

A token is base64url JSON of where the next page starts, the list depth hybrid search fused (so
every page of a query ranks the same lists), and a digest of the query and tenant: a token sent
with another query, or by another tenant, is refused rather than paging something else. Tokens
hold no secret and grant nothing; what a page shows is still filtered by the caller's tenant.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

from api.errors import ApiError
from schemas.api import SearchRequest

# What a page token does not pin down: the page size may change from page to page.
_NOT_THE_QUERY = {"page_token", "k"}


def _digest(req: SearchRequest, tenant: str) -> str:
    query = req.model_dump(mode="json", exclude=_NOT_THE_QUERY, by_alias=True)
    return hashlib.sha256(json.dumps([tenant, query], sort_keys=True).encode()).hexdigest()[:24]


def write(req: SearchRequest, tenant: str, offset: int, depth: int | None) -> str:
    raw = json.dumps({"o": offset, "d": depth, "q": _digest(req, tenant)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def read(token: str, req: SearchRequest, tenant: str) -> tuple[int, int | None]:
    """(offset, depth) from a token this query made; 422 ``invalid_page_token`` otherwise."""
    try:
        data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        offset, depth, digest = data["o"], data["d"], data["q"]
        valid = (isinstance(offset, int) and not isinstance(offset, bool) and 0 <= offset <= 1000
                 and (depth is None or (isinstance(depth, int) and 0 < depth <= 10_000)))
    except (binascii.Error, ValueError, KeyError, TypeError):
        valid = False
    if not valid:
        raise ApiError(422, "invalid_page_token", "page_token is not a token this API gave")
    if digest != _digest(req, tenant):
        raise ApiError(422, "invalid_page_token", "page_token belongs to another query: send the same query, "
                                                  "changing only page_token (and k if you like)")
    return offset, depth
