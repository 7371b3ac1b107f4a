"""Model loading and inference: CLIP (open_clip or transformers) and a captioner (transformers).

Each model is loaded once per process (see :func:`get_clip` / :func:`get_captioner`).
"""

from imagesearch.models.captioner import Captioner, get_captioner
from imagesearch.models.clip import ClipEncoder, get_clip
from imagesearch.models.loading import ModelMisconfigured, ModelUnavailable

__all__ = ["Captioner", "ClipEncoder", "ModelMisconfigured", "ModelUnavailable", "get_captioner", "get_clip"]
