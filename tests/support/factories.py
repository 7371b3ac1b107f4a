"""Records and store updates with defaults, so a test spells out only what it is about.

Every default is a plain placeholder (content hash ``"h"``, model ``"m"``, a 1x1 thumbnail ``"t"``);
a test that asserts on a field passes it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imagesearch.records import ImageRecord
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate


def record(image_id: str = "img", **overrides: Any) -> ImageRecord:
    """A queued record of ``image_id`` (blob ``originals/<id>``, content hash ``"h"``)."""
    fields: dict[str, Any] = {"blob_key": f"originals/{image_id}", "content_hash": "h"}
    return ImageRecord(id=image_id, **{**fields, **overrides})


def vector_update(image_id: str, vector: np.ndarray, **overrides: Any) -> ImageVectorUpdate:
    """The embed stage's update of ``image_id`` to ``vector`` (model ``"m"``, hash ``"h"``)."""
    fields: dict[str, Any] = {"content_hash": "h", "model": "m", "thumb_key": "t", "width": 1, "height": 1}
    return ImageVectorUpdate(id=image_id, vector=vector, **{**fields, **overrides})


def caption_update(image_id: str, caption: str, vector: np.ndarray, **overrides: Any) -> CaptionUpdate:
    """The caption stage's update of ``image_id`` (captioner ``"cap"``, text model ``"m"``, hash ``"h"``)."""
    fields: dict[str, Any] = {"content_hash": "h", "caption_model": "cap", "text_model": "m"}
    return CaptionUpdate(id=image_id, caption=caption, vector=vector, **{**fields, **overrides})
