"""The filter language as SQLite SQL over the embedded store's ``images`` table (alias ``i``).

Each part of a :class:`~imagesearch.filtering.Where` becomes one condition, joined by AND, with
every value a bound parameter. Tags are a JSON array column, attributes a JSON object column; an
attribute's JSON type is checked with its value, so a keyword "1" never equals the number 1, as
:meth:`~imagesearch.filtering.Condition.holds` requires.
"""

from __future__ import annotations

from imagesearch.filtering import Condition, Range, Where
from imagesearch.stores.base import Filters
from imagesearch.vocab import AttributeType

_JSON_TYPES = {
    AttributeType.KEYWORD: ("text",),
    AttributeType.NUMBER: ("integer", "real"),
    AttributeType.DATE: ("integer", "real"),
    AttributeType.BOOLEAN: ("true", "false"),
}
_OPERATORS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def filters_sql(filters: Filters, *, status: str | None = None) -> tuple[str, list[object]]:
    """``cond AND cond ...`` (``1`` when there is none) and its parameters."""
    parts: list[str] = []
    params: list[object] = []
    if status is not None:
        parts.append("i.status = ?")
        params.append(status)
    for column, value in (("tenant", filters.tenant), ("collection", filters.collection)):
        if value is not None:
            parts.append(f"i.{column} = ?")
            params.append(value)
    if filters.exclude_ids:
        parts.append(f"i.id NOT IN ({', '.join('?' * len(filters.exclude_ids))})")
        params.extend(sorted(filters.exclude_ids))
    where_sql(filters.where, parts, params)
    return (" AND ".join(parts) or "1"), params


def where_sql(where: Where, parts: list[str], params: list[object]) -> None:
    if where.tags_any:
        marks = ", ".join("?" * len(where.tags_any))
        parts.append(f"EXISTS (SELECT 1 FROM json_each(i.tags) WHERE value IN ({marks}))")
        params.extend(sorted(where.tags_any))
    for tag in sorted(where.tags_all):
        parts.append("EXISTS (SELECT 1 FROM json_each(i.tags) WHERE value = ?)")
        params.append(tag)
    for column, bounds in (("created_at", where.created_at), ("taken_at", where.taken_at)):
        if bounds is not None:
            _range(f"i.{column}", bounds, parts, params)  # NULL compares as false: no taken_at, no match
    for condition in where.attributes:
        _condition(condition, parts, params)


def _range(expression: str, bounds: Range, parts: list[str], params: list[object]) -> None:
    for key, value in bounds.bounds().items():
        parts.append(f"{expression} {_OPERATORS[key]} ?")
        params.append(value)


def _condition(condition: Condition, parts: list[str], params: list[object]) -> None:
    path = f'$."{condition.name}"'  # names are declared ones (attributes.NAME): no quote can occur
    kind = f"json_type(i.attributes, '{path}')"
    value = f"json_extract(i.attributes, '{path}')"
    if condition.op == "exists":
        parts.append(f"{kind} IS {'NOT ' if condition.exists else ''}NULL")
        return
    types = _JSON_TYPES[condition.kind]
    parts.append(f"{kind} IN ({', '.join(repr(t) for t in types)})")
    if condition.op == "range":
        assert condition.range is not None
        _range(value, condition.range, parts, params)
        return
    if condition.kind == AttributeType.BOOLEAN:
        wanted = sorted({"true" if v else "false" for v in condition.values})
        parts.append(f"{kind} IN ({', '.join(repr(t) for t in wanted)})")
        return
    parts.append(f"{value} IN ({', '.join('?' * len(condition.values))})")
    params.extend(condition.values)
