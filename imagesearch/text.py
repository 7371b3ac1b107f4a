"""Text normalisation shared by queries and stored texts, so both sides of a comparison agree.

NFKC folds full-width ASCII (``ＲＥＤ``, ``２``) and the ideographic space to their ordinary forms,
and compatibility characters (ligatures, circled digits) to what they stand for: users typing on a
Chinese input method get the same vector as users typing ASCII.
"""

from __future__ import annotations

import unicodedata


def normalize_text(text: str) -> str:
    """NFKC, then runs of whitespace (any Unicode space) collapsed to one ASCII space and trimmed."""
    return " ".join(unicodedata.normalize("NFKC", text).split())
