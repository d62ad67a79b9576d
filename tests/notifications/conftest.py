"""A live HTTP receiver on loopback, destinations, small retry settings."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.audit.actors import SYSTEM
from controlplane.notifications import services
from controlplane.notifications.models import Kind
from tests.canary.conftest import flag, merchants, rollout_factory  # noqa: F401


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: str

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers each POST with the next scripted status (then the last one)."""

    server: ThreadingHTTPServer
    statuses: list[int] = field(default_factory=lambda: [200])
    answer_body: bytes = b'{"ok": true}'
    delay: float = 0.0
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def next_status(self) -> int:
        count = len(self.received)
        return self.statuses[min(count - 1, len(self.statuses) - 1)]


def _handler(receiver_box: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            receiver = receiver_box[0]
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode()
            receiver.received.append(
                Received(self.path, {k: v for k, v in self.headers.items()}, body)
            )
            if receiver.delay:
                time.sleep(receiver.delay)
            status = receiver.next_status()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(receiver.answer_body)))
            self.end_headers()
            try:
                self.wfile.write(receiver.answer_body)
            except OSError:
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@pytest.fixture
def receiver_factory() -> Iterator:
    started: list[tuple[ThreadingHTTPServer, threading.Thread]] = []

    def make(**kwargs: object) -> Receiver:
        box: list[Receiver] = []
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(box))
        server.daemon_threads = True
        receiver = Receiver(server=server, **kwargs)
        box.append(receiver)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        started.append((server, thread))
        return receiver

    yield make
    for server, thread in started:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def receiver(receiver_factory) -> Receiver:
    return receiver_factory()


@pytest.fixture(autouse=True)
def fast_retries(settings) -> None:
    """Three attempts, no waiting, short timeouts (eager retries run at once)."""
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "NOTIFY_MAX_ATTEMPTS": 3,
        "NOTIFY_RETRY_BACKOFF_SECONDS": 0.0,
        "NOTIFY_TIMEOUT_SECONDS": 0.5,
        "NOTIFY_EAGER_IN_THREAD": False,
        "SITE_URL": "https://cp.example.com",
    }


@pytest.fixture
def webhook_factory(production):
    def make(url: str, *, kinds: list[str] | None = None, environment=None, name=None):
        destination, secret = services.destination_create(
            actor=SYSTEM,
            name=name or f"hook {url}",
            environment=environment or production,
            channel="webhook",
            url=url,
            kinds=list(Kind.values) if kinds is None else kinds,
        )
        return destination, secret

    return make
