"""A fake OpenSearch: an HTTP server on 127.0.0.1 (``http.server`` in a thread) that records every
request and answers with canned OpenSearch-format responses.

The store under test talks to it through opensearch-py's real client, transport, serializer and
bulk helpers. A test routes ``method path`` to responses (``fake.on(...)``), then reads what was
sent (``fake.sent(...)``, ``fake.requests``); a route may answer ``DROP`` to hang up unanswered.
:class:`Documents` answers reads of stored documents with OpenSearch's ``_source`` filtering, so
a test sees what a real cluster would send back for the request the store made.
"""

from __future__ import annotations

import fnmatch
import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from tests.fakes.opensearch_spec import parse_ndjson


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> Any:
        if not self.raw:
            return None
        if self.path.endswith("/_bulk"):
            return parse_ndjson(self.raw)
        return json.loads(self.raw)

    def pairs(self) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
        """A bulk body as (action, source) pairs."""
        lines, out, i = self.body, [], 0
        while i < len(lines):
            (op,) = lines[i]
            if op == "delete":
                out.append((lines[i], None))
                i += 1
            else:
                out.append((lines[i], lines[i + 1]))
                i += 2
        return out


Response = tuple[int, Any]
Responder = Callable[[Request], Response]
DROP: Response = (0, None)  # close the connection without a response


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    responses: list[Response | Responder]
    calls: int = 0

    def answer(self, request: Request) -> Response:
        response = self.responses[min(self.calls, len(self.responses) - 1)]
        self.calls += 1
        return response(request) if callable(response) else response


@dataclass
class FakeOpenSearch:
    requests: list[Request] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    unmatched: list[Request] = field(default_factory=list)
    # Findings of the spec/mapping checks that a test provokes on purpose.
    expected_problems: set[str] = field(default_factory=set)
    responses: list[tuple[Request, int, Any]] = field(default_factory=list)

    def on(self, method: str, path: str, *responses: Response | Responder) -> Route:
        """Answer ``method path`` (a regex matched against the whole decoded path) with the
        responses in turn, the last one repeating. Later routes win over earlier ones."""
        route = Route(method, re.compile(path), list(responses))
        self.routes.insert(0, route)
        return route

    def handle(self, request: Request) -> Response:
        self.requests.append(request)
        for route in self.routes:
            if route.method == request.method and route.pattern.fullmatch(request.path):
                status, body = route.answer(request)
                self.responses.append((request, status, body))
                return status, body
        self.unmatched.append(request)
        return 500, error_body("fake_unrouted_exception", f"no route for {request.method} {request.path}", 500)

    def sent(self, method: str, path: str) -> list[Request]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path, r.path)]

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                split = urlsplit(self.path)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = Request(
                    self.command,
                    unquote(split.path),
                    dict(parse_qsl(split.query)),
                    {k.lower(): v for k, v in self.headers.items()},
                    raw,
                )
                status, body = fake.handle(request)
                if (status, body) == DROP:  # hang up without answering, like a node going away
                    self.close_connection = True
                    return
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _serve

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def error_body(kind: str, reason: str, status: int) -> dict[str, Any]:
    return {
        "error": {"root_cause": [{"type": kind, "reason": reason}], "type": kind, "reason": reason},
        "status": status,
    }


# -- stored documents, read back with OpenSearch's source filtering ------------------------------


def _fields(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


def _source_filter(request: Request) -> tuple[bool, list[str], list[str]]:
    """(whether ``_source`` is returned, includes, excludes) for a search, get or mget: the body's
    ``_source`` first, then the ``_source``/``_source_includes``/``_source_excludes`` parameters."""
    body = request.body if request.raw and not request.path.endswith("/_bulk") else None
    spec = body.get("_source") if isinstance(body, dict) and "_source" in body else None
    query = request.query
    if spec is None and "_source" in query:
        spec = {"true": True, "false": False}.get(query["_source"], query["_source"])
    includes = _fields(query.get("_source_includes"))
    excludes = _fields(query.get("_source_excludes"))
    if spec is False:
        return False, [], []
    if isinstance(spec, str | list):
        includes = _fields(spec)
    elif isinstance(spec, dict):
        includes = _fields(spec.get("includes", spec.get("include")))
        excludes = _fields(spec.get("excludes", spec.get("exclude")))
    return True, includes, excludes


def filter_source(source: dict[str, Any], includes: list[str], excludes: list[str]) -> dict[str, Any]:
    """The top-level fields of ``source`` that the patterns keep (wildcards as OpenSearch's; an
    include of a sub-field keeps its whole object, which is coarser than OpenSearch but enough to
    see whether a top-level field such as a vector comes back)."""
    def included(name: str) -> bool:
        return not includes or any(fnmatch.fnmatchcase(name, p) or p.startswith(name + ".") for p in includes)

    def excluded(name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, p) for p in excludes)

    return {k: v for k, v in source.items() if included(k) and not excluded(k)}


@dataclass
class Documents:
    """Documents of one physical index, answering get, mget, search and scroll requests (every
    document is a hit; aggregations come back empty) with the request's source filtering applied.
    A scroll's later pages keep the filtering of the search that opened it, as OpenSearch does.
    Route them with :meth:`route`."""

    index: str
    docs: dict[str, dict[str, Any]]
    # The open scroll: the ids still to send, the page size and the opening request's filtering.
    _scroll: tuple[list[str], int, tuple[bool, list[str], list[str]]] | None = None

    def route(self, fake: FakeOpenSearch, alias: str) -> None:
        fake.on("GET", f"/{alias}/_doc/[^/]+", self.get)
        fake.on("POST", f"/{alias}/_mget", self.mget)
        fake.on("POST", f"/{alias}/_search", self.search)
        fake.on("POST", "/_search/scroll", self.scroll)
        fake.on("DELETE", "/_search/scroll", (200, {"succeeded": True, "num_freed": 1}))

    def _doc(self, request: Request, doc_id: str) -> dict[str, Any]:
        if doc_id not in self.docs:
            return {"_index": self.index, "_id": doc_id, "found": False}
        out: dict[str, Any] = {"_index": self.index, "_id": doc_id, "_version": 1, "_seq_no": 0,
                               "_primary_term": 1, "found": True}
        keep, includes, excludes = _source_filter(request)
        if keep:
            out["_source"] = filter_source(self.docs[doc_id], includes, excludes)
        return out

    def get(self, request: Request) -> Response:
        doc = self._doc(request, request.path.rsplit("/", 1)[1])
        return (200 if doc["found"] else 404), doc

    def mget(self, request: Request) -> Response:
        return 200, {"docs": [self._doc(request, doc_id) for doc_id in request.body["ids"]]}

    def search(self, request: Request) -> Response:
        body = request.body or {}
        size = int(body.get("size", request.query.get("size", 10)))
        ids, filtering = list(self.docs), _source_filter(request)
        if "scroll" in request.query:
            self._scroll = (ids[size:], size, filtering)
        return 200, self._hits(request, self._page(ids[:size], filtering), scroll="scroll" in request.query)

    def scroll(self, request: Request) -> Response:
        assert self._scroll is not None, "scroll without a search that opened it"
        ids, size, filtering = self._scroll
        self._scroll = (ids[size:], size, filtering)
        return 200, self._hits(request, self._page(ids[:size], filtering), scroll=True)

    def _page(self, ids: list[str], filtering: tuple[bool, list[str], list[str]]) -> list[dict[str, Any]]:
        keep, includes, excludes = filtering
        hits = []
        for doc_id in ids:
            hit: dict[str, Any] = {"_index": self.index, "_id": doc_id, "_score": 1.5}
            if keep:
                hit["_source"] = filter_source(self.docs[doc_id], includes, excludes)
            hits.append(hit)
        return hits

    def _hits(self, request: Request, hits: list[dict[str, Any]], *, scroll: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "took": 1, "timed_out": False, "_shards": {"total": 1, "successful": 1, "skipped": 0, "failed": 0},
            "hits": {"total": {"value": len(hits), "relation": "eq"}, "max_score": 1.5 if hits else None,
                     "hits": hits}}
        if scroll:
            out["_scroll_id"] = "scroll-1"
        aggs = (request.body or {}).get("aggs") if isinstance(request.body, dict) else None
        if aggs:
            out["aggregations"] = {name: ({"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": []}
                                          if "terms" in agg else {"doc_count": 0}) for name, agg in aggs.items()}
        return out
