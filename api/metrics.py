"""``GET /metrics``: Prometheus exposition of every process's samples (see imagesearch/metrics.py)."""

from __future__ import annotations

from flask import Blueprint, Response

from api.context import services
from api.openapi import Resp, spec
from imagesearch import metrics

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@spec.validate(tags=["operations"], skip_validation=True,
               resp=Resp(HTTP_200=(None, "Prometheus text exposition format.")))
def prometheus():
    """Prometheus metrics, merged over the API and worker processes of this machine.

    Images accepted, per-stage outcomes, batch sizes and latencies, search latency, and the
    depth of the embed and caption queues (read from Redis at scrape time).
    """
    body, content_type = metrics.exposition(services().settings)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
