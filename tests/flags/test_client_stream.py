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
    relay.start()
    try:
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
