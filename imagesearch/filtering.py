"""The filter language search and listing share, and both stores translate.

A filter is a conjunction (every part must hold):

- ``tags``: ``{"any": [...]}`` (at least one) and/or ``{"all": [...]}`` (every one);
- ``created_at`` / ``taken_at``: a range, ``{"gte", "gt", "lte", "lt"}``, each an ISO 8601 date or
  epoch seconds (a record without ``taken_at`` never matches a ``taken_at`` range);
- ``attributes``: per declared attribute one condition, ``{"eq": v}``, ``{"in": [v, ...]}``,
  ``{"range": {...}}`` (numbers and dates) or ``{"exists": true | false}``.

:meth:`Where.matches` is the reference semantics: the embedded store's SQL, OpenSearch's query and
the contract tests' brute force all agree with it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from imagesearch.attributes import AttributeSchema, InvalidAttribute, Value, parse_date
from imagesearch.errors import InvalidInput
from imagesearch.records import ImageRecord
from imagesearch.vocab import AttributeType

MAX_TERMS = 100
RANGE_KEYS = ("gte", "gt", "lte", "lt")


class InvalidFilter(InvalidInput):
    """A filter that does not parse (the message says where)."""


@dataclass(frozen=True)
class Range:
    gte: float | None = None
    gt: float | None = None
    lte: float | None = None
    lt: float | None = None

    def holds(self, value: float | None) -> bool:
        if value is None:
            return False
        return ((self.gte is None or value >= self.gte) and (self.gt is None or value > self.gt)
                and (self.lte is None or value <= self.lte) and (self.lt is None or value < self.lt))

    def bounds(self) -> dict[str, float]:
        return {k: v for k in RANGE_KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Condition:
    """One attribute's condition: ``op`` is ``in`` (``eq`` is ``in`` with one value), ``range`` or ``exists``."""

    name: str
    kind: AttributeType
    op: str
    values: tuple[Value, ...] = ()
    range: Range | None = None
    exists: bool = True

    def holds(self, attributes: Mapping[str, Value]) -> bool:
        value = attributes.get(self.name)
        if self.op == "exists":
            return (value is not None) == self.exists
        if value is None:
            return False
        if self.op in ("eq", "in"):
            return value in self.values and type(value) is type(self.values[0])
        assert self.range is not None
        return not isinstance(value, bool | str) and self.range.holds(float(value))


@dataclass(frozen=True)
class Where:
    tags_any: frozenset[str] = frozenset()
    tags_all: frozenset[str] = frozenset()
    created_at: Range | None = None
    taken_at: Range | None = None
    attributes: tuple[Condition, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.tags_any or self.tags_all or self.created_at or self.taken_at or self.attributes)

    def matches(self, record: ImageRecord) -> bool:
        tags = set(record.tags)
        return ((not self.tags_any or bool(tags & self.tags_any)) and self.tags_all <= tags
                and (self.created_at is None or self.created_at.holds(record.created_at))
                and (self.taken_at is None or self.taken_at.holds(record.taken_at))
                and all(c.holds(record.attributes) for c in self.attributes))


def parse_where(data: Mapping[str, Any] | None, schema: AttributeSchema) -> Where:
    """A :class:`Where` from the JSON form above. Raises :class:`InvalidFilter` or
    :class:`~imagesearch.attributes.InvalidAttribute` naming what is wrong."""
    if not data:
        return Where()
    if not isinstance(data, Mapping):
        raise InvalidFilter("filter must be an object")
    unknown = set(data) - {"tags", "created_at", "taken_at", "attributes"}
    if unknown:
        raise InvalidFilter(f"filter has unknown keys {sorted(unknown)}; use tags, created_at, taken_at, attributes")
    tags = data.get("tags") or {}
    if not isinstance(tags, Mapping) or set(tags) - {"any", "all"}:
        raise InvalidFilter('filter.tags must be {"any": [...]} and/or {"all": [...]}')
    return Where(
        tags_any=_tags(tags.get("any"), "filter.tags.any"),
        tags_all=_tags(tags.get("all"), "filter.tags.all"),
        created_at=_date_range(data.get("created_at"), "filter.created_at"),
        taken_at=_date_range(data.get("taken_at"), "filter.taken_at"),
        attributes=_conditions(data.get("attributes"), schema),
    )


def _tags(value: object, where: str) -> frozenset[str]:
    if value is None:
        return frozenset()
    if not isinstance(value, Sequence) or isinstance(value, str) or not value or len(value) > MAX_TERMS:
        raise InvalidFilter(f"{where} must be a list of 1 to {MAX_TERMS} tags")
    if not all(isinstance(t, str) and t for t in value):
        raise InvalidFilter(f"{where} must hold non-empty strings")
    return frozenset(value)


def _range(value: object, where: str, convert: Any) -> Range:
    if not isinstance(value, Mapping) or not value or set(value) - set(RANGE_KEYS):
        raise InvalidFilter(f"{where} must be an object with some of {', '.join(RANGE_KEYS)}")
    try:
        return Range(**{k: convert(v) for k, v in value.items()})
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidFilter(f"{where}: {exc}") from None


def _date_range(value: object, where: str) -> Range | None:
    return None if value is None else _range(value, where, parse_date)


def _conditions(value: object, schema: AttributeSchema) -> tuple[Condition, ...]:
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidFilter("filter.attributes must be an object of attribute name -> condition")
    out = []
    for name, condition in value.items():
        where = f"filter.attributes.{name}"
        kind = schema.type_of(name)
        if not isinstance(condition, Mapping) or len(condition) != 1:
            raise InvalidFilter(f"{where} must be one of eq, in, range, exists")
        ((op, operand),) = condition.items()
        if op == "eq":
            out.append(Condition(name, kind, "in", (schema.value(name, operand),)))
        elif op == "in":
            if not isinstance(operand, Sequence) or isinstance(operand, str) or not 0 < len(operand) <= MAX_TERMS:
                raise InvalidFilter(f"{where}.in must be a list of 1 to {MAX_TERMS} values")
            out.append(Condition(name, kind, "in", tuple(schema.value(name, v) for v in operand)))
        elif op == "range":
            if kind not in (AttributeType.NUMBER, AttributeType.DATE):
                raise InvalidAttribute(f"{where}: range needs a number or date attribute, {name!r} is a {kind}")
            out.append(Condition(name, kind, "range", range=_range(operand, f"{where}.range",
                                                                    lambda v, n=name: float(schema.value(n, v)))))
        elif op == "exists":
            if not isinstance(operand, bool):
                raise InvalidFilter(f"{where}.exists must be true or false")
            out.append(Condition(name, kind, "exists", exists=operand))
        else:
            raise InvalidFilter(f"{where}: unknown condition {op!r}; use eq, in, range or exists")
    return tuple(out)
