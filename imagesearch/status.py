"""What ``imagesearch status`` reports: records per status, queue depths, dead letters, latest failures."""

from __future__ import annotations

from typing import Any

import redis

from imagesearch.errors import TransientError
from imagesearch.services import Services
from imagesearch.vocab import CaptionStatus, Status


def status_report(svc: Services, failures: int = 10) -> dict[str, Any]:
    report: dict[str, Any] = {"store": svc.store.counts()}
    try:
        report["queues"] = {str(stage): depth for stage, depth in svc.queue.depths().items()}
        report["dead_letters"] = len(svc.ledger.dead_letters())
        report["search_profiles"] = [p.summary() for p in svc.profiles.all()]
    except (TransientError, redis.RedisError, OSError) as exc:  # the broker being down is a status
        report["queues"] = f"unavailable: {exc}"
    failed = sorted((r for r in svc.store.iter_records()
                     if r.status == Status.FAILED or r.caption_status == CaptionStatus.FAILED),
                    key=lambda r: r.updated_at, reverse=True)[:failures]
    report["latest_failures"] = [{"id": r.id, "source": r.source, "error": r.error} for r in failed]
    return report
