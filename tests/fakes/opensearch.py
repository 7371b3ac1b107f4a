"""A fake OpenSearch: an HTTP server on 127.0.0.1 (``http.server`` in a thread) that records every
request and answers with canned OpenSearch-format responses.

The store under test talks to it through opensearch-py's real client, transport, serializer and
bulk helpers. A test routes ``method path`` to responses (``fake.on(...)``), then reads what was
sent (``fake.sent(...)``, ``fake.requests``); a route may answer ``DROP`` to hang up unanswered.
"""

from __future__ import annotations

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
