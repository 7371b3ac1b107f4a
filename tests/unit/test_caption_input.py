"""The caption stage's input, with the real embedded store, blob folder and tiny models."""

from __future__ import annotations

from imagesearch.config import Settings
from imagesearch.models import get_clip
from imagesearch.stores.embedded import EmbeddedStore
from tests.support.images import jpeg


def test_caption_stage_sees_the_whole_thumbnail(tmp_path):
    """The captioner must get the thumbnail at its stored size (a decode with a tiny minimum side
    once shrank it to a sliver, and every caption became noise)."""
    from imagesearch import ingest
    from imagesearch.blobs import LocalBlobStore
    from imagesearch.models import get_captioner
    from imagesearch.pipeline import caption_batch, embed_batch

    settings = Settings(data_dir=tmp_path)
    store, blobs = EmbeddedStore(tmp_path / "s.sqlite3"), LocalBlobStore(settings.blob_dir)
    record = ingest.accept(
        ingest.Upload(jpeg(size=(800, 600))), settings=settings, store=store, blobs=blobs, enqueue=lambda _: None
    )
    embed_batch([record.id], settings=settings, store=store, blobs=blobs, clip=get_clip(settings))
    real = get_captioner(settings)
    seen: list[tuple[int, int]] = []

    class Recording:  # the real captioner, with the image sizes it was given written down
        identity = real.identity

        def caption(self, images):
            seen.extend(image.size for image in images)
            return real.caption(images)

    outcome = caption_batch(
        [record.id], settings=settings, store=store, blobs=blobs, captioner=Recording(), clip=get_clip(settings)
    )
    assert outcome.done == [record.id]
    assert seen == [(settings.ingest.thumbnail_size, settings.ingest.thumbnail_size * 3 // 4)]
