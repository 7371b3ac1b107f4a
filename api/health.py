"""Liveness, readiness, and whether this process is warm."""

from __future__ import annotations

import logging
import os
import threading
import time

from flask import Blueprint, Flask, current_app, jsonify

from api.context import services
from api.gunicorn_conf import WarmRoster
from api.openapi import HealthOut, ReadyOut, Resp, spec
from imagesearch.backoff import equal_jitter
from imagesearch.redis_state import connect
from imagesearch.services import Services
from imagesearch.stores.base import StoreUnavailable

bp = Blueprint("health", __name__)
TAGS = ["operations"]
log = logging.getLogger("api.warm")
_EXTENSION = "imagesearch.warmth"
_RETRY_CAP_S = 30.0


class Warmth:
    """Whether this process has loaded what a search needs (``Services.warm``), and the roster
    of its sibling workers when ``imagesearch serve`` runs it (see ``api.gunicorn_conf``)."""

    def __init__(self, svc: Services, roster: WarmRoster | None) -> None:
        self.svc = svc
        self.roster = roster
        self.warm = False
        self.error: str | None = "not warmed yet"
        self._lock = threading.Lock()

    def warm_up(self) -> bool:
        """Warm once; True when warm, False while another thread is warming or when the store
        cannot be reached (``error`` says which). Anything else (the model's files missing, a
        misconfigured model) raises: retrying cannot fix it."""
        if not self._lock.acquire(blocking=False):
            return self.warm
        try:
            if self.warm:
                return True
            try:
                timings = self.svc.warm()
            except StoreUnavailable as exc:
                self.error = f"the store cannot be reached: {exc}"
                log.error("API process not warm: %s; retrying", self.error)
                return False
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                raise
            self.warm, self.error = True, None
            # Logged before the roster knows, so a log read after a ready /readyz shows every warm.
            log.info("API process warm: query encoder and store loaded",
                     extra={name: round(seconds, 3) for name, seconds in timings.items()})
            if self.roster is not None:
                self.roster.mark_warm(os.getpid(), timings)
            return True
        finally:
            self._lock.release()

    def keep_trying(self) -> None:
        """Retry in a background thread until warm: the store may still be starting (OpenSearch
        next to the API in compose). Meanwhile /readyz says why this worker is not ready."""

        def retry() -> None:
            attempt = 0
            while True:
                time.sleep(equal_jitter(attempt, base=1.0, cap=_RETRY_CAP_S))
                try:
                    if self.warm_up():
                        return
                except Exception:  # the model loaded before the store failed, so this is rare: log, retry
                    log.exception("API process cannot warm")
                attempt += 1

        threading.Thread(target=retry, name="warm-retry", daemon=True).start()


def register(app: Flask, svc: Services) -> None:
    app.extensions[_EXTENSION] = Warmth(svc, WarmRoster.from_env())
    app.register_blueprint(bp)


def warmth_of(app: Flask) -> Warmth:
    return app.extensions[_EXTENSION]


@bp.get("/healthz")
@spec.validate(tags=TAGS, skip_validation=True, resp=Resp(HTTP_200=HealthOut))
def healthz():
    """Liveness: the process answers."""
    return jsonify({"status": "ok"})


@bp.get("/readyz")
@spec.validate(tags=TAGS, skip_validation=True, resp=Resp(HTTP_200=ReadyOut, HTTP_503=(ReadyOut, "Not ready.")))
def readyz():
    """Ready when the store and the broker answer and this process is warm (query encoder loaded,
    store vectors in memory); under ``imagesearch serve``, when every gunicorn worker is warm."""
    svc = services()
    checks: dict[str, str] = {}
    for name, probe in (("store", lambda: svc.store.counts()), ("broker", _ping_broker), ("models", _warm)):
        try:
            probe()
            checks[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports any failure, it never raises
            checks[name] = f"error: {exc}"
    roster = warmth_of(current_app).roster
    if roster is not None:
        warm, expected = roster.count()
        checks["workers"] = "ok" if expected and warm >= expected else f"error: {warm} of {expected} workers warm"
    ready = all(v == "ok" for v in checks.values())
    body = {"status": "ready" if ready else "not_ready", "checks": checks, "profile": _profile() if ready else None}
    return jsonify(body), 200 if ready else 503


def _warm() -> None:
    warmth = warmth_of(current_app)
    # Under `imagesearch serve` the worker warmed before serving, or retries by itself; a process
    # that no server hook warmed (Flask's test client, a plain `gunicorn api.wsgi:app`) warms here.
    if not warmth.warm and warmth.roster is None:
        warmth.warm_up()
    if not warmth.warm:
        raise RuntimeError(f"not warm: {warmth.error}")


def _profile() -> dict | None:
    """The search profile applied to these models (fusion and calibrations), if one was saved."""
    try:
        profile = services().current_profile()
    except Exception:  # noqa: BLE001 - a profile that cannot be read is not a readiness failure
        return None
    return profile.summary() if profile is not None else None


def _ping_broker() -> None:
    connect(services().settings.redis.url, timeout=2).ping()
