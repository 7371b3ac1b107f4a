"""What a caller may say about an image besides its bytes: title, description, tags, attributes.

One parser for every way it arrives: upload form fields, S3 object metadata (``x-amz-meta-*``,
renamed through ``IMAGESEARCH_S3_METADATA_MAP``) and backfill sidecar files all give strings or
JSON values, checked here against the declared attributes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from imagesearch.attributes import AttributeSchema, InvalidAttribute, Value
from imagesearch.errors import InvalidInput

MAX_TITLE = 512
MAX_DESCRIPTION = 8192
MAX_TAGS = 64
MAX_TAG = 128


class InvalidMetadata(InvalidInput):
    """A title, description, tags or attributes value that cannot be used (the message names it)."""


@dataclass(frozen=True)
class Metadata:
    title: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    attributes: Mapping[str, Value] = field(default_factory=dict)


def parse_tags(value: object) -> tuple[str, ...]:
    """A list of tags, or a comma-separated string of them."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(t, str) for t in items):
        raise InvalidMetadata("tags must be a list of strings or a comma-separated string")
    tags = tuple(dict.fromkeys(t.strip() for t in items if t.strip()))
    if len(tags) > MAX_TAGS or any(len(t) > MAX_TAG for t in tags):
        raise InvalidMetadata(f"at most {MAX_TAGS} tags of at most {MAX_TAG} characters")
    return tags


def text_field(name: str, value: object, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidMetadata(f"{name} must be a string")
    value = value.strip()
    if len(value) > limit:
        raise InvalidMetadata(f"{name} is longer than {limit} characters")
    return value or None


def parse_attributes(value: object, schema: AttributeSchema) -> dict[str, Value]:
    """A JSON object (or its text) of declared attributes, typed."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else {}
        except json.JSONDecodeError as exc:
            raise InvalidAttribute(f"attributes must be a JSON object: {exc}") from None
    if not isinstance(value, Mapping):
        raise InvalidAttribute("attributes must be a JSON object of name -> value")
    return schema.coerce(value)


def from_fields(fields: Mapping[str, object], schema: AttributeSchema) -> Metadata:
    """Form fields or a sidecar object: ``title``, ``description``, ``tags``, ``attributes``."""
    return Metadata(title=text_field("title", fields.get("title"), MAX_TITLE),
                    description=text_field("description", fields.get("description"), MAX_DESCRIPTION),
                    tags=parse_tags(fields.get("tags") or ()),
                    attributes=parse_attributes(fields.get("attributes") or {}, schema))


def from_s3_metadata(metadata: Mapping[str, str], schema: AttributeSchema, renames: Mapping[str, str]) -> Metadata:
    """S3 user metadata (keys without ``x-amz-meta-``, as boto3 gives them): a key renamed by
    ``renames``, or named ``title``/``description``/``tags`` or a declared attribute, is used;
    other keys are ignored (buckets carry metadata for other readers too)."""
    fields: dict[str, object] = {}
    attributes: dict[str, object] = {}
    for key, raw in metadata.items():
        name = renames.get(key.lower(), key.lower())
        if name in ("title", "description", "tags"):
            fields[name] = raw
        elif name in schema.types:
            attributes[name] = raw
    return Metadata(title=text_field("title", fields.get("title"), MAX_TITLE),
                    description=text_field("description", fields.get("description"), MAX_DESCRIPTION),
                    tags=parse_tags(fields.get("tags") or ()),
                    attributes=schema.coerce(attributes))
