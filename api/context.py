"""Per-process services the views share: store, blob storage, the query encoder."""

from __future__ import annotations

import threading
from functools import cached_property
from typing import Callable

from flask import current_app

from imagesearch.blobs import BlobStore, open_blobs
from imagesearch.config import Settings
from imagesearch.models import ClipEncoder, get_clip
from imagesearch.search import SearchService
from imagesearch.stores import Store, open_store


class Services:
    def __init__(self, settings: Settings, enqueue: Callable[[str], None]) -> None:
        self.settings = settings
        self.enqueue = enqueue
        self._lock = threading.Lock()

    @cached_property
    def store(self) -> Store:
        return open_store(self.settings)

    @cached_property
    def blobs(self) -> BlobStore:
        return open_blobs(self.settings)

    @property
    def clip(self) -> ClipEncoder:
        return get_clip(self.settings)  # loaded once per process, on first use

    @cached_property
    def searcher(self) -> SearchService:
        return SearchService(self.settings, self.store, self.clip)


def services() -> Services:
    return current_app.extensions["imagesearch"]
