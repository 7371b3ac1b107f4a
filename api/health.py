"""Liveness and readiness."""

from __future__ import annotations

from flask import Blueprint, jsonify

from api.context import services
from api.openapi import HealthOut, ReadyOut, Resp, spec
from imagesearch.redis_state import connect

bp = Blueprint("health", __name__)
TAGS = ["operations"]


@bp.get("/healthz")
@spec.validate(tags=TAGS, skip_validation=True, resp=Resp(HTTP_200=HealthOut))
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@spec.validate(tags=TAGS, skip_validation=True, resp=Resp(HTTP_200=ReadyOut, HTTP_503=(ReadyOut, "Not ready.")))
def readyz():
    """Ready when the store answers, the broker answers and the query encoder is loaded."""
    svc = services()
    checks: dict[str, str] = {}
    for name, probe in (("store", lambda: svc.store.counts()), ("broker", _ping_broker),
                        ("models", lambda: svc.clip.identity)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure, it never raises
            checks[name] = f"error: {exc}"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "profile": _profile() if ready else None}
    return jsonify(body), 200 if ready else 503


def _profile() -> dict | None:
    """The search profile applied to these models (fusion and calibrations), if one was saved."""
    try:
        profile = services().current_profile()
    except Exception:  # noqa: BLE001 - a profile that cannot be read is not a readiness failure
        return None
    return profile.summary() if profile is not None else None


def _ping_broker() -> None:
    connect(services().settings.redis.url, timeout=2).ping()
