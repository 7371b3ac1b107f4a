"""S3 metadata values as HEAD returns them, and what a source's metadata changes in a record."""

from __future__ import annotations

from email.header import Header

import pytest

from imagesearch.ingest import metadata_patch
from imagesearch.metadata import Metadata
from imagesearch.s3.sources import decode_metadata_value
from tests.support.factories import record


@pytest.mark.parametrize("text", ["女士红色连衣裙 Summer dress", "ünïcødé", "日本語の写真", "a" * 300 + "é"])
def test_encoded_words_decode_to_the_text(text):
    for charset in ("utf-8", "UTF-8"):
        encoded = Header(text, charset).encode()
        assert encoded.isascii() and decode_metadata_value(encoded) == text


@pytest.mark.parametrize("value", ["plain", "12.5", "=?", "a =? b ?= c", "=?bogus-charset?q?x?=", ""])
def test_anything_else_is_taken_as_written(value):
    assert decode_metadata_value(value) == value


def test_metadata_patch_changes_only_what_the_source_names():
    current = record(title="Old", description="Kept", tags=["a"], attributes={"price": 1.0, "brand": "X"})
    meta = Metadata(title="New", description=None, tags=("b",), attributes={"price": 2.0})
    patch = metadata_patch(current, meta, {"title", "tags", "attributes"})
    assert patch is not None
    assert (patch.title, patch.description, patch.tags) == ("New", None, ["b"]) and patch.clear == frozenset()
    assert patch.attributes == {"price": 2.0, "brand": "X"}  # merged, one by one
    # A field named and empty clears it; nothing different, nothing to do.
    cleared = metadata_patch(current, Metadata(), {"description"})
    assert cleared is not None and cleared.clear == frozenset({"description"})
    assert metadata_patch(current, Metadata(title="Old", attributes={"brand": "X"}), {"title"}) is None
