"""Typed record attributes: what an operator declares (``IMAGESEARCH_ATTRIBUTES``) and how values
given as JSON, form fields or S3 metadata strings become typed values.

Values are kept as JSON scalars: keyword -> str, number -> float, boolean -> bool, date -> epoch
seconds (float). Dates arrive as ISO 8601 (an offset is honoured; none means UTC) or epoch seconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from imagesearch.errors import InvalidInput
from imagesearch.vocab import AttributeType

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
MAX_KEYWORD = 256
MAX_ATTRIBUTES = 64
Value = str | float | bool


class InvalidAttribute(InvalidInput):
    """An attribute the schema does not declare, or a value of the wrong type (the message names it)."""


@dataclass(frozen=True)
class AttributeSchema:
    types: Mapping[str, AttributeType]

    @classmethod
    def parse(cls, spec: str) -> AttributeSchema:
        """``"brand:keyword,price:number,in_stock:boolean,released:date"`` (empty: no attributes)."""
        types: dict[str, AttributeType] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            name, _, kind = part.partition(":")
            name, kind = name.strip(), kind.strip()
            if not NAME.match(name):
                raise ValueError(f"attribute name {name!r} must match {NAME.pattern}")
            if name in types:
                raise ValueError(f"attribute {name!r} is declared twice")
            try:
                types[name] = AttributeType(kind)
            except ValueError:
                raise ValueError(f"attribute {name!r} has type {kind!r}; use one of "
                                 f"{', '.join(AttributeType)}") from None
        return cls(types)

    def type_of(self, name: str) -> AttributeType:
        try:
            return self.types[name]
        except KeyError:
            declared = ", ".join(sorted(self.types)) or "none (set IMAGESEARCH_ATTRIBUTES)"
            raise InvalidAttribute(f"attribute {name!r} is not declared; declared: {declared}") from None

    def coerce(self, values: Mapping[str, object]) -> dict[str, Value]:
        """Typed values for ``values`` (JSON scalars or strings). Raises :class:`InvalidAttribute`."""
        if len(values) > MAX_ATTRIBUTES:
            raise InvalidAttribute(f"at most {MAX_ATTRIBUTES} attributes")
        return {name: self.value(name, value) for name, value in values.items()}

    def value(self, name: str, raw: object) -> Value:
        kind = self.type_of(name)
        try:
            return _COERCE[kind](raw)
        except (TypeError, ValueError, OverflowError) as exc:
            raise InvalidAttribute(f"attribute {name!r} is a {kind}: {exc}") from None


def _keyword(raw: object) -> str:
    if not isinstance(raw, str):
        raise TypeError(f"expected a string, got {_kind(raw)}")
    if not raw or len(raw) > MAX_KEYWORD:
        raise ValueError(f"expected 1 to {MAX_KEYWORD} characters")
    return raw


def _number(raw: object) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise TypeError(f"expected a number, got {_kind(raw)}")
    value = float(raw)
    if not math.isfinite(value):
        raise ValueError("expected a finite number")
    return value


def _boolean(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise TypeError(f"expected true or false, got {_kind(raw)}")


def parse_date(raw: object) -> float:
    """Epoch seconds from ISO 8601 (offset honoured, none: UTC) or a number of epoch seconds."""
    if isinstance(raw, bool):
        raise TypeError("expected a date, got a boolean")
    if isinstance(raw, int | float):
        value = float(raw)
    elif isinstance(raw, str):
        text = raw.strip()
        try:
            value = float(text)
        except ValueError:
            parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
            value = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
    else:
        raise TypeError(f"expected an ISO 8601 date or epoch seconds, got {_kind(raw)}")
    if not math.isfinite(value) or abs(value) > 253402300799:  # past 9999-12-31
        raise ValueError("date out of range")
    return value


def _kind(raw: object) -> str:
    return "null" if raw is None else type(raw).__name__


_COERCE = {AttributeType.KEYWORD: _keyword, AttributeType.NUMBER: _number, AttributeType.BOOLEAN: _boolean,
           AttributeType.DATE: parse_date}
