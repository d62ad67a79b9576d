"""Controller fixtures: a bool flag in production with a pilot merchant,
rollouts built through the services, outcome events reported through the
ingestion service, and a live HTTP server whose answer a test can change."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from canary import services
from canary.models import Rollout
from controlplane.audit.actors import SYSTEM

SAMPLE = [f"merchant-{i:04d}" for i in range(1000)]

FOUR_PHASES: list[dict] = [
    {"name": "pilot", "target_type": "pilot", "pilot_merchants": ["m-pilot"]},
    {"name": "10%", "target_type": "percentage", "percentage": 10},
    {"name": "50%", "target_type": "percentage", "percentage": 50},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]


class HealthServer(ThreadingHTTPServer):
    """Serves ``GET /health`` with ``status`` and ``{"value": value}``."""

    daemon_threads = True
    status = 200
    value: float = 1.0


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: HealthServer

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        status, body = 404, b"{}"
        if path == "/health":
            status = self.server.status
            body = json.dumps({"value": self.server.value}).encode()
        elif path.startswith("/sleep/"):
            time.sleep(float(path.rsplit("/", 1)[1]))
            status, body = 200, b'{"value": 0}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:  # the client gave up (a timeout test)
            pass


@pytest.fixture
def health_server() -> Iterator[HealthServer]:
    """A live HTTP server on 127.0.0.1 (port 0); ``.url`` is its /health."""
    server = HealthServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}/health"  # type: ignore[attr-defined]
    server.base = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def closed_url() -> str:
    """A URL on a loopback port nobody listens on."""
    return f"http://127.0.0.1:{free_port()}/health"


@pytest.fixture
def merchants(merchant_factory) -> dict[str, Any]:
    return {key: merchant_factory(key) for key in ("m-pilot", "m-pilot-2")}


@pytest.fixture
def flag(production, flag_factory):
    return flag_factory("sequential_workflow")


def http_check(url: str, **overrides: Any) -> dict:
    """A check that passes while the server answers 200."""
    return {
        "name": "health",
        "provider": "http",
        "spec": {"url": url, "measure": "status"},
        "comparator": "eq",
        "threshold": 200,
        "interval": 1,
        "min_samples": 1,
        "timeout": 2.0,
        **overrides,
    }


def outcomes_check(**overrides: Any) -> dict:
    """A check on the treatment cohort's error rate (below 5%)."""
    return {
        "name": "error_rate",
        "provider": "outcomes",
        "spec": {"metric": "error_rate"},
        "comparator": "lt",
        "threshold": 0.05,
        "interval": 1,
        "min_samples": 1,
        "failure_limit": 0,
        **overrides,
    }


def sql_check(**overrides: Any) -> dict:
    """A check that one read-only query on the default database answers 0
    (a test lists ``default`` in CANARY_SQL_DATABASES to use it)."""
    return {
        "name": "orphans",
        "provider": "sql",
        "spec": {
            "query": "SELECT COUNT(*) FROM canary_rollout WHERE status = 'nonsense'"
        },
        "comparator": "eq",
        "threshold": 0,
        "interval": 1,
        "min_samples": 1,
        **overrides,
    }


@pytest.fixture
def rollout_factory(flag, production, merchants) -> Callable[..., Rollout]:
    """Create a rollout through the services and start it unless told not to."""

    def make(
        *,
        phases: list[dict] | None = None,
        checks: list[dict] | None = None,
        start: bool = True,
        **kwargs: Any,
    ) -> Rollout:
        rollout = services.rollout_create(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            name=kwargs.pop("name", "controller test"),
            phases=FOUR_PHASES if phases is None else phases,
            checks=checks or [],
            **kwargs,
        )
        if start:
            rollout = services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
        rollout.refresh_from_db()
        return rollout

    return make


@pytest.fixture
def report_outcomes(production) -> Callable[..., int]:
    """Report outcome events through the ingestion service, occurring now."""
    from canary.services.outcomes import outcome_events_ingest

    def report(
        *,
        variation: str = "on",
        successes: int = 0,
        failures: int = 0,
        flag_key: str = "sequential_workflow",
    ) -> int:
        events = [
            {
                "flag": flag_key,
                "merchant": f"merchant-{i:04d}",
                "variation": variation,
                "outcome": "success" if i < successes else "failure",
                "duration_ms": 20.0 + i % 7,
            }
            for i in range(successes + failures)
        ]
        return (
            outcome_events_ingest(events=events, environment=production)
            if events
            else 0
        )

    return report


def answers(environment, flag_key: str, keys: list[str]) -> dict[str, object]:
    """Evaluate ``flag_key`` for ``keys`` from the compiled ruleset."""
    from flags import engine, mappers

    ruleset = mappers.ruleset_compile(environment)
    return {
        key: engine.evaluate(ruleset, flag_key, {"merchant": key}).value for key in keys
    }


def share_on(environment, flag_key: str) -> float:
    values = answers(environment, flag_key, SAMPLE)
    return sum(1 for v in values.values() if v is True) / len(SAMPLE)
