"""Vector + metadata stores behind one interface (:class:`imagesearch.stores.base.Store`)."""

from imagesearch.config import Settings
from imagesearch.errors import ConfigurationError
from imagesearch.stores.base import CaptionUpdate, ImageVectorUpdate, Store


def open_store(settings: Settings) -> Store:
    """The store the settings select; each process opens its own."""
    if settings.storage.backend == "embedded":
        from imagesearch.stores.embedded import EmbeddedStore

        return EmbeddedStore(settings.store_path, settings.storage.busy_timeout_seconds)
    if settings.storage.backend == "opensearch":
        from imagesearch.stores.opensearch import OpenSearchStore

        return OpenSearchStore.from_settings(settings)
    raise ConfigurationError(f"unknown store {settings.storage.backend!r}")


__all__ = ["CaptionUpdate", "ImageVectorUpdate", "Store", "open_store"]
