"""Real stand-ins for the providers' tests: a Prometheus server scraping a
test exporter, and a live HTTP server."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from django.utils import timezone

from canary.providers import MeasureContext
from tests.sql_fixtures import (  # noqa: F401
    sql_checks_on,
    sql_reader,
    sql_unreachable,
)

EXPORTED_METRICS = """\
# HELP cp_test_latency_seconds A gauge with a known value.
# TYPE cp_test_latency_seconds gauge
cp_test_latency_seconds 0.123
# HELP cp_test_requests_total Requests by code.
# TYPE cp_test_requests_total counter
cp_test_requests_total{code="200"} 90
cp_test_requests_total{code="500"} 10
# HELP cp_test_nan A gauge that is not a number.
# TYPE cp_test_nan gauge
cp_test_nan NaN
"""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/metrics":
            self._send(200, EXPORTED_METRICS.encode(), "text/plain; version=0.0.4")
        elif path == "/health":
            body = {
                "status": "ok",
                "data": {"items": [{"queue": 7}, {"queue": 42.5}]},
                "ready": True,
                "missing": None,
                "label": "green",
            }
            self._send(200, json.dumps(body).encode())
        elif path.startswith("/status/"):
            self._send(int(path.rsplit("/", 1)[1]), b'{"error": "boom"}')
        elif path.startswith("/sleep/"):
            time.sleep(float(path.rsplit("/", 1)[1]))
            self._send(200, b'{"slept": true}')
        elif path == "/text":
            self._send(200, b"not json", "text/plain")
        else:
            self._send(404, b"{}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def live_http() -> Iterator[str]:
    """A threaded HTTP server on 127.0.0.1 (port 0); yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def closed_port_url() -> str:
    """A URL on a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}"


def _query(base: str, promql: str) -> dict | None:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': promql})}"
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return json.loads(response.read())
    except Exception:
        return None


@pytest.fixture(scope="session")
def prometheus_url(live_http: str) -> Iterator[str]:
    """A real Prometheus on a loopback port scraping the test exporter
    every second; yields its base URL once the first scrape is queryable."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip(
            "the prometheus binary is absent (apt-get install prometheus;"
            " .ci/install-system-packages does it)"
        )
    workdir = Path(tempfile.mkdtemp(prefix="cp-prometheus-"))
    exporter = urllib.parse.urlsplit(live_http).netloc
    (workdir / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: cp_test\n    scrape_interval: 1s\n"
        f"    static_configs:\n      - targets: ['{exporter}']\n"
    )
    last_error = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = free_port()
        log = open(workdir / "prometheus.log", "wb")
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        ready = False
        while time.monotonic() < deadline and process.poll() is None:
            answer = _query(base, "cp_test_latency_seconds")
            if answer and answer.get("data", {}).get("result"):
                ready = True
                break
            time.sleep(0.2)
        if ready:
            break
        process.terminate()
        process.wait(timeout=10)
        log.close()
        last_error = (workdir / "prometheus.log").read_text(errors="replace")[-2000:]
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        pytest.fail(f"prometheus did not become queryable within 30 s:\n{last_error}")
    try:
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture
def ctx() -> MeasureContext:
    return MeasureContext(
        flag_key="sequential_workflow",
        environment_key="production",
        treatment_variation="on",
        since=timezone.now() - timedelta(hours=1),
    )
