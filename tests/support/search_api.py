"""Filling an app's store as the pipeline would, and searching it over HTTP, for the search API tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from flask.testing import FlaskClient

from imagesearch.stores.base import Store
from tests.support.factories import caption_update, record, vector_update


def put_indexed(store: Store, model: str, image_id: str, image_vector: np.ndarray, *, caption: str | None = None,
                caption_vector: np.ndarray | None = None, **record_fields: Any) -> None:
    """Store ``image_id`` as the embed stage leaves it (its image vector from ``model``), and given a
    ``caption`` and its vector, as the caption stage does after (tenant ``default`` unless given)."""
    store.put(record(image_id, **{"tenant": "default", **record_fields}))
    store.set_image_vectors([vector_update(image_id, image_vector, model=model)])
    if caption is not None:
        assert caption_vector is not None, "a caption is stored with its vector"
        store.set_captions([caption_update(image_id, caption, caption_vector, text_model=model)])


def search(client: FlaskClient, status: int = 200, **body: Any) -> dict[str, Any]:
    """POST ``body`` to ``/v1/search``; the response must have ``status`` (its body says why not)."""
    response = client.post("/v1/search", json=body)
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()
