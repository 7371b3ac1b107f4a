"""Talking to OpenSearch: the client, the one retry policy, and bulk requests read item by item.

Why there is exactly one retry policy, and what it retries: ARCHITECTURE.md, "OpenSearch store",
Connection and Retries and errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass
from typing import Any

from opensearchpy import OpenSearch, helpers
from opensearchpy import exceptions as os_errors

from imagesearch.backoff import equal_jitter
from imagesearch.config import Settings
from imagesearch.errors import ConfigurationError, PermanentError
from imagesearch.stores.base import StoreUnavailable

log = logging.getLogger(__name__)


class StoreRejected(PermanentError):
    """OpenSearch refused a write for a reason that retrying cannot fix (a 4xx other than 429)."""


class IndexMissing(StoreUnavailable):
    """A bulk write named an index or alias that does not exist; the store's idea of its write
    index is out of date."""


@dataclass(frozen=True)
class BulkItem:
    """The final outcome of one bulk action."""

    op: str
    id: str
    status: int | str
    result: str | None
    error: Any

    @property
    def ok(self) -> bool:
        return isinstance(self.status, int) and 200 <= self.status < 300

    @property
    def error_type(self) -> str:
        return self.error.get("type", "") if isinstance(self.error, dict) else ""

    def describe(self) -> str:
        if isinstance(self.error, dict):
            return f"{self.error.get('type')}: {self.error.get('reason')}"
        return str(self.error)


# An index block refuses a write for as long as it lasts, and the ones a live index meets pass: the
# write block a reindex puts on the index it swapped the write alias away from (a write that
# resolved the alias just before the swap is refused there, and sent again it resolves the alias to
# the new index), or a cluster-wide block while disk space or the master recovers.
BLOCKED = "cluster_block_exception"


def is_transient(status: int | str, error_type: str = "") -> bool:
    """429, 5xx, an index or cluster block, and no answer at all (opensearch-py reports connection
    errors as 'N/A')."""
    return not isinstance(status, int) or status == 429 or status >= 500 or error_type == BLOCKED


def failed_call_is_transient(exc: os_errors.TransportError) -> bool:
    """:func:`is_transient` for an API call's error (``exc.error`` is the error type OpenSearch named)."""
    kind = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], str) else ""
    return is_transient(exc.status_code, kind)


def build_client(settings: Settings) -> OpenSearch:
    """An opensearch-py client for the settings: basic auth, or SigV4 signing with boto3's
    credential chain (Amazon OpenSearch Service ``es``, or ``aoss``) when a region is set."""
    kwargs: dict[str, Any] = {
        "hosts": [settings.opensearch.url],
        "verify_certs": settings.opensearch.verify_certs,
        # The store retries with backoff itself; the transport would retry at once, unpaced.
        "max_retries": 0,
        "retry_on_timeout": False,
        "timeout": 30,
    }
    if settings.opensearch.aws_region:
        import boto3
        from opensearchpy import Urllib3AWSV4SignerAuth

        credentials = boto3.Session().get_credentials()
        if credentials is None:
            raise ConfigurationError("IMAGESEARCH_OPENSEARCH_AWS_REGION is set but boto3 found no AWS credentials")
        kwargs["http_auth"] = Urllib3AWSV4SignerAuth(credentials, settings.opensearch.aws_region,
                                                     settings.opensearch.aws_service)
    elif settings.opensearch.username:
        kwargs["http_auth"] = (settings.opensearch.username, settings.opensearch.password or "")
    return OpenSearch(**kwargs)


@dataclass
class RetryingClient:
    """API calls and bulk requests under the store's retry policy: ``retries`` more attempts after
    the first, paced by capped exponential backoff with equal jitter."""

    client: OpenSearch
    _: KW_ONLY
    retries: int = 5
    backoff_s: float = 0.5
    backoff_max_s: float = 10.0
    chunk_size: int = 500
    sleep: Callable[[float], None] = time.sleep

    def delay(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (1 for the first retry)."""
        return equal_jitter(attempt - 1, base=self.backoff_s, cap=self.backoff_max_s)

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """One API call, retried on 429, 5xx and connection errors; other errors propagate."""
        last: Exception | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.delay(attempt))
            try:
                return fn(*args, **kwargs)
            except os_errors.TransportError as exc:
                if not failed_call_is_transient(exc):
                    raise
                last = exc
                log.warning("OpenSearch %s failed (%s), attempt %d", getattr(fn, "__name__", fn), exc, attempt + 1)
        raise StoreUnavailable(f"OpenSearch did not succeed after {self.retries + 1} attempts: {last}") from last

    def bulk(self, actions: list[dict[str, Any]], **params: Any) -> list[BulkItem]:
        """Send bulk actions; return one final outcome per action, in order.

        Items answered 429/5xx or refused by an index block (or lost with their whole request) are
        sent again after a backoff;
        409 on an update (a conflict left after ``retry_on_conflict``) too. Everything else is
        final and returned for the caller to interpret, except a missing index
        (:class:`IndexMissing`), which no retry can fix before the caller looks again.
        """
        final: dict[int, BulkItem] = {}
        pending = list(range(len(actions)))
        last: BulkItem | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.delay(attempt))
            retry: list[int] = []
            results = helpers.streaming_bulk(
                self.client, [actions[i] for i in pending], chunk_size=self.chunk_size, max_retries=0,
                raise_on_error=False, raise_on_exception=False, yield_ok=True, **params)
            answered = 0
            for i, (_, info) in zip(pending, results, strict=False):
                answered += 1
                ((op, body),) = info.items()
                item = BulkItem(op, str(body.get("_id", actions[i].get("_id"))), body.get("status", "N/A"),
                                body.get("result"), body.get("error"))
                if item.error_type == "index_not_found_exception":
                    raise IndexMissing(f"{actions[i].get('_index')} does not exist: {item.describe()}")
                if is_transient(item.status, item.error_type) or (item.status == 409 and op == "update"):
                    retry.append(i)
                    last = item
                else:
                    final[i] = item
            retry.extend(pending[answered:])  # a response with fewer items than were sent (hence strict=False)
            if not retry:
                return [final[i] for i in range(len(actions))]
            log.warning("%d of %d bulk item(s) to retry (last: %s %s), attempt %d", len(retry), len(pending),
                        last.status if last else "no answer", last.describe() if last else "", attempt + 1)
            pending = retry
        raise StoreUnavailable(f"{len(pending)} bulk item(s) still failing after {self.retries + 1} attempts; "
                               f"last: {last.status if last else 'no answer'} {last.describe() if last else ''}")
