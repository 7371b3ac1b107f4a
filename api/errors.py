"""Every error leaves as JSON ``{"error": {"code", "message"}}``; bad input never becomes a 500."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from imagesearch.errors import Conflict, ImageSearchError, InvalidInput, NotFound, TooLarge, TransientError
from imagesearch.imaging import InvalidImage
from imagesearch.models import ModelMisconfigured, ModelUnavailable
from imagesearch.search import CancelledOut, NotCalibrated, NoVectorYet, PageTooDeep, UnknownImage, UnsupportedInMode
from imagesearch.stores.base import StoreUnavailable
from imagesearch.taskqueue import QueueUnavailable

log = logging.getLogger(__name__)

# Domain error -> (HTTP status, error code). The first row whose type matches wins, so specific
# types come before their bases; a domain error no row names is a bug and answers 500.
STATUS_OF: tuple[tuple[type[ImageSearchError], int, str], ...] = (
    (InvalidImage, 415, "invalid_image"),
    (TooLarge, 413, "too_large"),
    (UnknownImage, 404, "bad_query"),
    (NoVectorYet, 409, "bad_query"),
    (NotCalibrated, 409, "not_calibrated"),
    (UnsupportedInMode, 422, "unsupported_in_mode"),
    (CancelledOut, 422, "examples_cancel_out"),
    (PageTooDeep, 422, "page_too_deep"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (InvalidInput, 422, "invalid_request"),
    (StoreUnavailable, 503, "store_unavailable"),
    (ModelMisconfigured, 503, "model_misconfigured"),
    (ModelUnavailable, 503, "model_unavailable"),
    (QueueUnavailable, 503, "broker_unavailable"),
    (TransientError, 503, "unavailable"),
)


def status_of(exc: ImageSearchError) -> tuple[int, str] | None:
    for kind, status, code in STATUS_OF:
        if isinstance(exc, kind):
            return status, code
    return None


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: list | None = None,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details
        self.retry_after = retry_after


def error_response(status: int, code: str, message: str, details: list | None = None):
    body: dict = {"code": code, "message": message}
    if details:
        body["details"] = details
    return jsonify({"error": body}), status


def register(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError):
        body, status = error_response(exc.status, exc.code, exc.message, exc.details)
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else {}
        if status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return body, status, headers

    @app.errorhandler(ValidationError)
    def _validation(exc: ValidationError):
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        first = details[0]
        where = ".".join(str(p) for p in first["loc"]) or "request"
        return error_response(422, "invalid_request", f"{where}: {first['msg']}", details)

    @app.errorhandler(ImageSearchError)
    def _domain(exc: ImageSearchError):
        found = status_of(exc)
        if found is None:
            log.exception("a domain error without an HTTP status")
            return error_response(500, "internal_error", "internal error")
        return error_response(*found, str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
