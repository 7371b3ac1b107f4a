"""Every error leaves as JSON ``{"error": {"code", "message"}}``; bad input never becomes a 500."""

from __future__ import annotations

import logging

from flask import Flask, jsonify
from pydantic import ValidationError
from werkzeug.exceptions import HTTPException

from imagesearch.imaging import InvalidImage
from imagesearch.ingest import UploadTooLarge
from imagesearch.models import ModelUnavailable
from imagesearch.search import QueryError
from imagesearch.stores.base import StoreUnavailable

log = logging.getLogger(__name__)


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

    @app.errorhandler(InvalidImage)
    def _invalid_image(exc: InvalidImage):
        return error_response(415, "invalid_image", str(exc))

    @app.errorhandler(UploadTooLarge)
    def _too_large(exc: UploadTooLarge):
        return error_response(413, "too_large", str(exc))

    @app.errorhandler(QueryError)
    def _query(exc: QueryError):
        return error_response(404 if str(exc).startswith("unknown") else 409, "bad_query", str(exc))

    @app.errorhandler(StoreUnavailable)
    def _store(exc: StoreUnavailable):
        return error_response(503, "store_unavailable", str(exc))

    @app.errorhandler(ModelUnavailable)
    def _model(exc: ModelUnavailable):
        return error_response(503, "model_unavailable", str(exc))

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, code, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error")
