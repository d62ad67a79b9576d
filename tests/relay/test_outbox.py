"""The relay's outbox against a stand-in upstream on loopback that stores
events by id and can lose its answers: retried batches arrive once, a torn
line is never sent, and what was acknowledged stays acknowledged across a
restart."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from flags.relay.outbox import OUTBOX_FILE, Outbox
from tests.relay.harness import wait_until


class Upstream(ThreadingHTTPServer):
    """POST /api/v1/events: stores events by id; drops the first answers."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stored: dict[str, dict] = {}
        self.posts = 0
        self.lose_answers = 0
        self.down = False


class _Handler(BaseHTTPRequestHandler):
    server: Upstream

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.server.down:
            self.send_response(503)
            self.end_headers()
            return
        self.server.posts += 1
        for event in body["events"]:
            self.server.stored.setdefault(event["id"], event)
        if self.server.lose_answers > 0:
            # stored, but the answer never reaches the relay
            self.server.lose_answers -= 1
            self.connection.close()
            return
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"accepted": 1}')

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _outbox(upstream: Upstream, data_dir: Path) -> Outbox:
    host, port = upstream.server_address
    return Outbox(f"http://{host}:{port}", "cp_srv_relay", data_dir, timeout=2)


def _events(count: int) -> list[dict]:
    return [
        {"flag": "sw", "merchant": f"m-{n}", "outcome": "success"} for n in range(count)
    ]


def test_outbox__answers_lost__retried_batches_stored_once(upstream, tmp_path):
    # Given
    upstream.lose_answers = 2
    outbox = _outbox(upstream, tmp_path)
    outbox.append(_events(7))
    # When
    outbox.start()
    try:
        wait_until(lambda: outbox.pending() == 0, 10, "the outbox to drain")
    finally:
        outbox.stop()
    # Then
    assert upstream.posts >= 3
    assert len(upstream.stored) == 7


def test_outbox__upstream_down__kept_then_sent_after_restart(upstream, tmp_path):
    # Given: accepted while the upstream is down, then the relay stops
    upstream.down = True
    outbox = _outbox(upstream, tmp_path)
    outbox.append(_events(4))
    outbox.start()
    time.sleep(0.5)
    outbox.stop()
    assert outbox.pending() == 4
    # When: a new relay process on the same data directory, upstream back
    upstream.down = False
    again = _outbox(upstream, tmp_path)
    again.start()
    try:
        wait_until(lambda: again.pending() == 0, 10, "the outbox to drain")
        again.append(_events(1))
        wait_until(lambda: again.pending() == 0, 10, "the new event")
    finally:
        again.stop()
    # Then
    assert len(upstream.stored) == 5
    assert again._read_offset() == again._offset


def test_outbox__torn_last_line__cut_at_restart_never_sent(upstream, tmp_path):
    # Given: a crash in the middle of an append left half a line
    _outbox(upstream, tmp_path).append(_events(2))
    with open(tmp_path / OUTBOX_FILE, "a") as handle:
        handle.write('{"id": "torn", "flag"')
    # When: the relay starts again and accepts more
    outbox = _outbox(upstream, tmp_path)
    outbox.append(_events(1))
    outbox.start()
    try:
        wait_until(lambda: outbox.pending() == 0, 10, "the outbox to drain")
    finally:
        outbox.stop()
    # Then
    assert "torn" not in upstream.stored
    assert len(upstream.stored) == 3


def test_outbox__client_id_kept__its_retry_stored_once(upstream, tmp_path):
    # Given
    outbox = _outbox(upstream, tmp_path)
    event = {**_events(1)[0], "id": "client-1"}
    # When
    outbox.append([event])
    outbox.append([event])
    outbox.start()
    try:
        wait_until(lambda: outbox.pending() == 0, 10, "the outbox to drain")
    finally:
        outbox.stop()
    # Then
    assert list(upstream.stored) == ["client-1"]
