"""Check OpenSearch requests against the official OpenSearch API specification.

The specification (OpenAPI 3.1, YAML) is read in place from ``../shared/opensearch-api-spec``
beside the repository; it is never copied here. Schemas are resolved with ``jsonschema`` and a
``referencing`` registry holding every YAML file of ``spec/`` under its ``file://`` URI, so the
specification's own relative ``$ref``s (``'_common.yaml#/components/schemas/Id'``) resolve as
written.

The published schemas almost never say ``additionalProperties: false``, so plain JSON Schema
validation would accept a misspelt key (``"dimensions": 512``) without complaint. ``strict``
checking (the default) adds what OpenSearch's own parsers do: every key of an object must be one
the schema names (through ``allOf``, the matching ``oneOf``/``anyOf`` branches and ``$ref``s),
unless the schema leaves the object open (``additionalProperties``, free-form ``type: object``).

``validate_request(method, path, query, body)`` finds the operation by HTTP method and path
template, checks the query parameter names and values against the operation's parameters and
the global ones, and the body against the operation's request body schema. Bulk bodies are
checked line by line: each action line strictly against ``OperationContainer``, each ``update``
body strictly against ``UpdateAction``, and the pairing of action and source lines.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urldefrag, urljoin

import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SPEC_ROOT = Path(__file__).resolve().parents[2] / ".." / "shared" / "opensearch-api-spec"
HTTP_METHODS = ("get", "put", "post", "delete", "head", "patch", "options")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class SpecViolation(AssertionError):
    pass


@dataclass
class Operation:
    method: str
    template: str
    group: str
    body: dict[str, Any]  # the operation object from the namespace file
    uri: str  # the namespace file

    @property
    def literal_segments(self) -> int:
        return sum(1 for s in self.template.strip("/").split("/") if not s.startswith("{"))


@dataclass
class _Collected:
    """Everything the schemas that apply to one instance say about its keys and items."""

    props: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    patterns: list[tuple[str, tuple[str, str]]] = field(default_factory=list)
    additional: list[tuple[str, str]] = field(default_factory=list)
    items: list[tuple[str, str]] = field(default_factory=list)
    closed: bool = False  # some schema lists the allowed keys
    open: bool = False  # some schema allows any key


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


class OpenSearchSpec:
    def __init__(self, root: Path = SPEC_ROOT) -> None:
        self.root = Path(root).resolve()
        self.spec_dir = self.root / "spec"
        if not self.spec_dir.is_dir():
            raise FileNotFoundError(f"no OpenSearch API specification at {self.root}")
        self._docs: dict[str, Any] = {}
        for path in sorted(self.spec_dir.rglob("*.yaml")):
            with path.open() as handle:
                self._docs[path.as_uri()] = yaml.load(handle, Loader=_LOADER)
        self.registry = Registry().with_resources(
            (uri, Resource.from_contents(doc, default_specification=DRAFT202012)) for uri, doc in self._docs.items())
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}

    # -- schemas ---------------------------------------------------------------------------------

    def uri(self, relative: str) -> str:
        return (self.spec_dir / relative).as_uri()

    def _split(self, ref: str, base: str | None = None) -> tuple[str, str]:
        """A reference (relative to ``base``, or to ``spec/``) as (file URI, JSON pointer)."""
        absolute = urljoin(base, ref) if base else urljoin(self.spec_dir.as_uri() + "/", ref)
        uri, fragment = urldefrag(absolute)
        return uri, unquote(fragment)

    def _node(self, uri: str, pointer: str) -> Any:
        node = self._docs[uri]
        for segment in pointer.split("/")[1:] if pointer else []:
            segment = segment.replace("~1", "/").replace("~0", "~")
            node = node[int(segment)] if isinstance(node, list) else node[segment]
        return node

    def _validator(self, uri: str, pointer: str) -> Draft202012Validator:
        key = (uri, pointer)
        if key not in self._validators:
            self._validators[key] = Draft202012Validator({"$ref": f"{uri}#{quote(pointer, safe='/')}"},
                                                         registry=self.registry)
        return self._validators[key]

    def errors(self, ref: str, instance: Any, *, strict: bool = True, base: str | None = None) -> list[str]:
        """Messages for everything wrong with ``instance`` under the schema at ``ref``
        (e.g. ``schemas/_common.mapping.yaml#/components/schemas/KnnVectorProperty``)."""
        uri, pointer = self._split(ref, base)
        return self._errors_at(uri, pointer, instance, strict=strict)

    def _errors_at(self, uri: str, pointer: str, instance: Any, *, strict: bool = True, path: str = "") -> list[str]:
        path = path or "$"
        found = ["/".join([path, *map(str, e.absolute_path)]) + f": {e.message}"
                 for e in self._validator(uri, pointer).iter_errors(instance)]
        if not found and strict:
            found = self._strict_errors(uri, pointer, instance, path)
        return found

    def validate(self, ref: str, instance: Any, *, strict: bool = True) -> None:
        problems = self.errors(ref, instance, strict=strict)
        if problems:
            raise SpecViolation(f"{ref}:\n  " + "\n  ".join(problems[:20]))

    def _collect(self, uri: str, pointer: str, instance: Any, out: _Collected) -> None:
        node = self._node(uri, pointer)
        if not isinstance(node, dict):
            return
        if "$ref" in node:
            self._collect(*self._split(node["$ref"], uri), instance, out)
        for index, _ in enumerate(node.get("allOf", ())):
            self._collect(uri, f"{pointer}/allOf/{index}", instance, out)
        for keyword in ("oneOf", "anyOf"):
            for index, _ in enumerate(node.get(keyword, ())):
                branch = f"{pointer}/{keyword}/{index}"
                if self._validator(uri, branch).is_valid(instance):
                    self._collect(uri, branch, instance, out)
        for name in node.get("properties", {}):
            out.closed = True
            out.props.setdefault(name, []).append((uri, f"{pointer}/properties/{_escape(name)}"))
        for regex in node.get("patternProperties", {}):
            out.closed = True
            out.patterns.append((regex, (uri, f"{pointer}/patternProperties/{_escape(regex)}")))
        for keyword in ("additionalProperties", "unevaluatedProperties"):
            if keyword in node:
                if node[keyword] is False:
                    out.closed = True
                elif node[keyword] is True:
                    out.open = True
                else:
                    out.additional.append((uri, f"{pointer}/{keyword}"))
        if isinstance(node.get("items"), dict):
            out.items.append((uri, f"{pointer}/items"))

    def _strict_errors(self, uri: str, pointer: str, instance: Any, path: str) -> list[str]:
        info = _Collected()
        self._collect(uri, pointer, instance, info)
        problems: list[str] = []
        if isinstance(instance, dict):
            for key, value in instance.items():
                schemas = info.props.get(key) or [s for regex, s in info.patterns if re.search(regex, key)] \
                    or info.additional
                if not schemas:
                    if info.closed and not info.open:
                        problems.append(f"{path}/{key}: unknown property {key!r} "
                                        f"(the schema allows {sorted(info.props)})")
                    continue
                for sub_uri, sub_pointer in schemas:
                    problems += self._strict_errors(sub_uri, sub_pointer, value, f"{path}/{key}")
        elif isinstance(instance, list):
            for sub_uri, sub_pointer in info.items:
                for index, value in enumerate(instance):
                    problems += self._strict_errors(sub_uri, sub_pointer, value, f"{path}/{index}")
        return list(dict.fromkeys(problems))

    # -- operations ------------------------------------------------------------------------------

    @cached_property
    def operations(self) -> list[Operation]:
        found = []
        for uri, doc in self._docs.items():
            if "/spec/namespaces/" not in uri:
                continue
            for template, item in (doc.get("paths") or {}).items():
                for method, body in item.items():
                    if method in HTTP_METHODS:
                        found.append(Operation(method.upper(), template, body.get("x-operation-group", ""),
                                               body, uri))
        return found

    @staticmethod
    def _matches(template: str, path: str) -> bool:
        want, got = template.strip("/").split("/"), path.strip("/").split("/")
        if len(want) != len(got):
            return False
        return all((w.startswith("{") and g != "") or w == g for w, g in zip(want, got))

    def operation(self, method: str, path: str) -> Operation:
        path = "/" + unquote(path.split("?", 1)[0]).lstrip("/")
        candidates = [op for op in self.operations if op.method == method.upper() and self._matches(op.template, path)]
        if not candidates:
            raise SpecViolation(f"the specification has no operation for {method.upper()} {path}")
        return max(candidates, key=lambda op: op.literal_segments)

    def _resolve(self, uri: str, node: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
        """Follow a ``$ref`` (parameters, request bodies) to (uri, pointer, object)."""
        target_uri, pointer = self._split(node["$ref"], uri) if "$ref" in node else (uri, "")
        return target_uri, pointer, self._node(target_uri, pointer)

    @cached_property
    def _global_parameters(self) -> dict[str, tuple[str, str]]:
        uri = (self.spec_dir / "_global_parameters.yaml").as_uri()
        params = self._docs[uri]["components"]["parameters"]
        return {p["name"]: (uri, f"/components/parameters/{_escape(key)}/schema")
                for key, p in params.items() if p.get("in") == "query"}

    def _query_parameters(self, op: Operation) -> dict[str, tuple[str, str]]:
        allowed = dict(self._global_parameters)
        for ref in op.body.get("parameters", ()):
            uri, pointer, param = self._resolve(op.uri, ref)
            if param.get("in") == "query":
                allowed[param["name"]] = (uri, f"{pointer}/schema")
        return allowed

    def validate_request(self, method: str, path: str, query: dict[str, str] | None = None,
                         body: Any = None) -> Operation:
        """Check one request; raises :class:`SpecViolation` listing every problem."""
        op = self.operation(method, path)
        problems: list[str] = []
        allowed = self._query_parameters(op)
        for name, value in (query or {}).items():
            if name not in allowed:
                problems.append(f"query parameter {name!r} is not one of {op.method} {op.template}'s")
                continue
            uri, pointer = allowed[name]
            if all(self._errors_at(uri, pointer, candidate) for candidate in _query_values(value)):
                problems.append(f"query parameter {name}={value!r} does not fit its schema")
        request_body = op.body.get("requestBody")
        if body is None:
            if request_body is not None and self._resolve(op.uri, request_body)[2].get("required"):
                problems.append("the operation requires a body")
        elif request_body is None:
            problems.append(f"{op.method} {op.template} takes no body")
        else:
            uri, pointer, resolved = self._resolve(op.uri, request_body)
            content = resolved["content"]
            media = "application/x-ndjson" if isinstance(body, list) and "application/x-ndjson" in content \
                else "application/json"
            if media not in content:
                problems.append(f"{op.method} {op.template} does not take {media}")
            else:
                problems += self._errors_at(uri, f"{pointer}/content/{_escape(media)}/schema", body)
                if op.group in ("bulk", "bulk_stream"):
                    problems += self.bulk_errors(body)
        if problems:
            raise SpecViolation(f"{method.upper()} {path} ({op.template}):\n  " + "\n  ".join(problems[:20]))
        return op

    def bulk_errors(self, lines: list[Any]) -> list[str]:
        """Action lines strictly valid, each followed by the source line its action needs."""
        problems: list[str] = []
        index = 0
        while index < len(lines):
            action = lines[index]
            problems += [f"line {index}: {p}" for p in
                         self.errors("schemas/_core.bulk.yaml#/components/schemas/OperationContainer", action)]
            if not isinstance(action, dict) or len(action) != 1:
                return problems + [f"line {index}: not an action line: {action!r}"]
            (op,) = action
            if op == "delete":
                index += 1
                continue
            if index + 1 >= len(lines):
                return problems + [f"line {index}: {op} action without a source line"]
            source = lines[index + 1]
            if not isinstance(source, dict):
                problems.append(f"line {index + 1}: source is not an object")
            elif op == "update":
                problems += [f"line {index + 1}: {p}" for p in
                             self.errors("schemas/_core.bulk.yaml#/components/schemas/UpdateAction", source)]
            index += 2
        return problems


def _query_values(value: str) -> list[Any]:
    """A query-string value as the typed values it may stand for."""
    candidates: list[Any] = [value]
    if value in ("true", "false"):
        candidates.insert(0, value == "true")
    elif re.fullmatch(r"-?\d+", value):
        candidates.insert(0, int(value))
    if "," in value:
        candidates.append(value.split(","))
    return candidates


def parse_ndjson(raw: bytes) -> list[Any]:
    import json

    return [json.loads(line) for line in raw.decode().splitlines() if line.strip()]
