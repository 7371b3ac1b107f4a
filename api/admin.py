"""Operator endpoints (admin scope): dead letters."""

from __future__ import annotations

from flask import Blueprint, jsonify, request
from pydantic import BaseModel

from api.auth import AUTH_RESPONSES
from api.context import services
from api.openapi import Resp, spec
from schemas.api import ErrorOut

bp = Blueprint("admin", __name__, url_prefix="/v1/admin")
TAGS = ["admin"]


class DeadLetter(BaseModel):
    id: str
    stage: str
    reason: str
    at: float


class DeadLettersOut(BaseModel):
    dead_letters: list[DeadLetter]


class RedriveIn(BaseModel):
    ids: list[str] | None = None


class RedriveOut(BaseModel):
    requeued: list[str]


@bp.get("/dead-letters")
@spec.validate(tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=DeadLettersOut, **{**AUTH_RESPONSES, "HTTP_403": (ErrorOut, "Not an admin key.")}))
def dead_letters():
    """Images whose processing killed a worker `MAX_DELIVERIES` times."""
    return jsonify(DeadLettersOut(dead_letters=services().ledger.dead_letters()).model_dump())


@bp.post("/dead-letters/redrive")
@spec.validate(json=RedriveIn, tags=TAGS, skip_validation=True, resp=Resp(
    HTTP_200=RedriveOut, **{**AUTH_RESPONSES, "HTTP_403": (ErrorOut, "Not an admin key.")}))
def redrive():
    """Queue dead letters again (all, or the given ids) after fixing what killed the worker."""
    svc = services()
    requeued = svc.ledger.redrive(svc.queue, RedriveIn.model_validate(request.get_json(silent=True) or {}).ids)
    return jsonify(RedriveOut(requeued=requeued).model_dump())
