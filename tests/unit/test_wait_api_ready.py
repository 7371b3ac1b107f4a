"""``procs.wait_api_ready``, the /readyz poll that ``start_api`` and the benches share, against a
stand-in server process: it waits through non-200 answers and refused connections, and fails at
once, with the log's tail, when the process exits."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from imagesearch.dev.procs import ManagedProcess, free_port, wait_api_ready

# Answers /readyz 503 for its first ``argv[2]`` requests, then 200; listens only after a pause, so
# the first probes are refused connections.
SERVER = """
import sys, time
from http.server import BaseHTTPRequestHandler, HTTPServer
port, not_ready = int(sys.argv[1]), int(sys.argv[2])
seen = []
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        seen.append(self.path)
        status = 503 if len(seen) <= not_ready else 200
        print("readyz", status, flush=True)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
time.sleep(0.5)
HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def _server(tmp_path: Path, *args: str) -> tuple[ManagedProcess, str]:
    port = free_port()
    proc = ManagedProcess([sys.executable, "-c", SERVER, str(port), *args], {"PATH": "/usr/bin:/bin"},
                          tmp_path / "api.log")
    return proc, f"http://127.0.0.1:{port}"


def test_waits_through_refused_connections_and_503s_until_200(tmp_path: Path) -> None:
    proc, base = _server(tmp_path, "3")
    try:
        wait_api_ready(proc, base, timeout=30, interval=0.05)
        assert proc.output().split() == ["readyz", "503"] * 3 + ["readyz", "200"]
    finally:
        proc.close()


def test_never_ready_times_out(tmp_path: Path) -> None:
    proc, base = _server(tmp_path, "1000000")
    try:
        with pytest.raises(TimeoutError, match="API ready not reached within 2s"):
            wait_api_ready(proc, base, timeout=2, interval=0.05)
        assert "readyz 503" in proc.output()
    finally:
        proc.close()


def test_an_api_that_exits_fails_at_once_with_its_output(tmp_path: Path) -> None:
    proc = ManagedProcess([sys.executable, "-c", "print('cannot load the model'); raise SystemExit(3)"],
                          {"PATH": "/usr/bin:/bin"}, tmp_path / "api.log")
    try:
        started = time.monotonic()
        with pytest.raises(RuntimeError, match="the API exited:\ncannot load the model"):
            wait_api_ready(proc, f"http://127.0.0.1:{free_port()}", timeout=60, interval=0.05)
        assert time.monotonic() - started < 30
    finally:
        proc.close()
