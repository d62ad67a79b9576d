"""The Python client follows the ruleset stream of a real ASGI control plane
(and of a relay): a change arrives without waiting for the 30 s poll, the
last good ruleset stays when the stream drops, and it reconnects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from flags.client import FlagsClient
from tests.relay.harness import ControlPlane, Relay, wait_until

pytestmark = [pytest.mark.slow]

BOUND = 5.0  # seconds; bench/propagation.py measures the real figure


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    plane = ControlPlane(tmp_path_factory.mktemp("client-stream"))
    try:
        plane.start()
        yield plane
    finally:
        plane.close()


def _serves(client: FlagsClient, variation: str) -> bool:
    return client.evaluate("sw", {"merchant": "m-1"}).variation == variation


def test_client__change_announced__fetched_without_waiting_for_the_poll(upstream):
    # Given
    with FlagsClient(upstream.url, upstream.keys["client"], "production") as client:
        assert client.poll_interval == 30.0
        wait_until(lambda: client.is_streaming, BOUND, "the stream")
        for variation in ("on", "off", "on"):
            # When
            upstream.serve(variation)
            started = time.monotonic()
            # Then
            wait_until(lambda v=variation: _serves(client, v), BOUND, "the change")
            assert time.monotonic() - started < BOUND


def test_client__stream_drops__last_ruleset_kept_then_reconnects(upstream):
    # Given
    upstream.serve("off")
    with FlagsClient(upstream.url, upstream.keys["client"], "production") as client:
        wait_until(lambda: client.is_streaming and _serves(client, "off"), BOUND, "up")
        # When
        upstream.stop()
        wait_until(lambda: not client.is_streaming, BOUND, "the stream to drop")
        # Then
        answer = client.evaluate("sw", {"merchant": "m-1"})
        assert (answer.variation, answer.reason) == ("off", "STATIC")
        upstream.start()
        wait_until(lambda: client.is_streaming, 10, "the reconnection")
        upstream.serve("on")
        wait_until(lambda: _serves(client, "on"), BOUND, "the change after it")


def test_client__attached_to_a_relay__follows_the_relay_stream(upstream, tmp_path):
    # Given
    relay = Relay(upstream, tmp_path / "relay")
    try:
        relay.start()
        with FlagsClient(relay.url, upstream.keys["client"], "production") as client:
            wait_until(lambda: client.is_streaming, BOUND, "the relay's stream")
            for variation in ("off", "on"):
                # When
                upstream.serve(variation)
                # Then
                wait_until(lambda v=variation: _serves(client, v), BOUND, "the change")
    finally:
        relay.close()


def test_client__no_stream__polls_only(upstream):
    # Given
    client = FlagsClient(
        upstream.url, upstream.keys["client"], "production", stream=False
    )
    try:
        # When
        version = client.version
        # Then
        assert version is not None
        assert client.is_streaming is False
    finally:
        client.close()


def _first_lines(url: str, key: str, last_event_id: int | None) -> list[str]:
    """Return the lines of the stream's first second."""
    import urllib.request

    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = str(last_event_id)
    request = urllib.request.Request(url, headers=headers)
    lines: list[str] = []
    with urllib.request.urlopen(request, timeout=1.5) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        try:
            while len(lines) < 8:
                lines.append(response.readline().decode().rstrip("\n"))
        except TimeoutError:
            pass
    return lines


def test_stream__last_event_id__only_what_the_client_missed(upstream):
    # Given
    url = f"{upstream.url}/api/v1/environments/production/stream"
    key = upstream.keys["client"]
    with FlagsClient(upstream.url, key, "production", stream=False) as client:
        current = client.version
    # When
    fresh = _first_lines(url, key, None)
    behind = _first_lines(url, key, current - 1)
    caught_up = _first_lines(url, key, current)
    # Then
    assert f"id: {current}" in fresh and f"id: {current}" in behind
    assert not any(line.startswith("id:") for line in caught_up)
    assert ": hb" in caught_up  # heartbeats every STREAM_HEARTBEAT_SECONDS


def test_stream__wrong_keys__401_and_403(upstream):
    # Given
    from tests.relay.harness import http

    url = f"{upstream.url}/api/v1/environments/production/stream"
    # When
    missing = http("GET", url)[0]
    unknown = http("GET", url, "cp_srv_nope")[0]
    other = http("GET", url.replace("production", "staging"), upstream.keys["client"])
    # Then
    assert (missing, unknown, other[0]) == (401, 401, 403)
