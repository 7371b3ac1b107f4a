"""The OpenSearch store: the same interface as the embedded store, for deployments past one machine.

Its design (aliases and versioned indices, the first index, conditional updates, retries,
visibility) is described once, in ARCHITECTURE.md, "OpenSearch store". The modules:
:mod:`.transport` (client, retry policy, bulk), :mod:`.lifecycle` (indices and aliases),
:mod:`.records` (documents and their updates), :mod:`.search` (queries), :mod:`.mapping` (index
body, names, scores) and :mod:`.store` (the class assembled from them).
"""

from imagesearch.stores.opensearch.mapping import score_to_cosine
from imagesearch.stores.opensearch.records import CAPTION_SCRIPT, FAILED_SCRIPT, IMAGE_SCRIPT, PATCH_SCRIPT
from imagesearch.stores.opensearch.store import OpenSearchStore
from imagesearch.stores.opensearch.transport import StoreRejected, build_client

__all__ = [
    "CAPTION_SCRIPT",
    "FAILED_SCRIPT",
    "IMAGE_SCRIPT",
    "PATCH_SCRIPT",
    "OpenSearchStore",
    "StoreRejected",
    "build_client",
    "score_to_cosine",
]
