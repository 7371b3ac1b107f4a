"""Contracts shared by the API, the workers and clients: request/response models and index templates."""

from schemas.api import (
    AcceptedOut,
    ErrorBody,
    ErrorOut,
    ImageOut,
    SearchHit,
    SearchRequest,
    SearchResponse,
)

__all__ = ["AcceptedOut", "ErrorBody", "ErrorOut", "ImageOut", "SearchHit", "SearchRequest", "SearchResponse"]
