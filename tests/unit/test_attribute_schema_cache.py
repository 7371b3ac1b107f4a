"""``settings.ingest.attribute_schema()`` parses IMAGESEARCH_ATTRIBUTES once, not per request, and
still follows the settings it is asked on (another declaration, a copy, an assignment)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imagesearch.attributes import AttributeType
from imagesearch.config import IngestSettings, Settings


def test_the_schema_is_parsed_once_per_declaration(monkeypatch):
    monkeypatch.setenv("IMAGESEARCH_ATTRIBUTES", "colour:keyword, weight:number")
    settings = Settings()
    first = settings.ingest.attribute_schema()
    assert first.types == {"colour": AttributeType.KEYWORD, "weight": AttributeType.NUMBER}
    assert settings.ingest.attribute_schema() is first  # the same object: not parsed again
    assert Settings().ingest.attribute_schema() is first  # another process-wide settings object too


def test_the_schema_follows_the_settings_it_is_asked_on():
    ingest = IngestSettings(attributes="size:number")
    assert ingest.attribute_schema().types == {"size": AttributeType.NUMBER}
    copy = ingest.model_copy(update={"attributes": "size:keyword,fresh:boolean"})
    assert copy.attribute_schema().types == {"size": AttributeType.KEYWORD, "fresh": AttributeType.BOOLEAN}
    assert ingest.attribute_schema().types == {"size": AttributeType.NUMBER}
    ingest.attributes = "born:date"
    assert ingest.attribute_schema().types == {"born": AttributeType.DATE}
    assert IngestSettings().attribute_schema().types == {}


def test_a_bad_declaration_still_fails_at_start_up_every_time():
    for _ in range(2):  # a failed parse is not cached as a success
        with pytest.raises(ValidationError, match="declared twice"):
            IngestSettings(attributes="a:number,a:keyword")
