"""The Python client against a live server: fetch, 304 polling, change pickup,
unreachable server, and never raising."""

from __future__ import annotations

import socket
import time

import pytest

from controlplane.audit.actors import SYSTEM
from flags import services
from flags.client import FlagsClient
from tests.apikeys.fixtures import (  # noqa: F401
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_client__live_server__evaluates_locally(live_server, catalog, server_key):
    # Given
    with FlagsClient(
        live_server.url, server_key, "production", poll_interval=60
    ) as client:
        # When
        answer = client.evaluate("checkout_layout", {"merchant": "m-gold"})
        pilot = client.bool_value("sequential_workflow", {"merchant": "m-pilot"}, False)
    # Then
    assert (answer.value, answer.variation, answer.reason, answer.level) == (
        {"columns": 2, "sidebar": True},
        "v2",
        "TARGETING_MATCH",
        "rule:1",
    )
    assert pilot is True
    assert client.is_stale is False


def test_client__flag_changed__refresh_gets_new_version_then_304(
    live_server, catalog, server_key, production
):
    # Given
    client = FlagsClient(live_server.url, server_key, "production", poll_interval=60)
    before = client.version
    # When
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=catalog["workflow"], environment=production, percentage=100
    )
    deadline = time.monotonic() + 5
    while client.version == before and time.monotonic() < deadline:
        time.sleep(0.05)
        client.refresh()
    unchanged = client.refresh()
    # Then
    assert client.version > before
    assert unchanged is True
    assert (
        client.bool_value("sequential_workflow", {"merchant": "m-anyone"}, False)
        is True
    )
    client.close()


def test_client__server_unreachable__last_ruleset_and_stale(
    live_server, catalog, server_key
):
    # Given
    client = FlagsClient(live_server.url, server_key, "production", poll_interval=60)
    client.base_url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    # When
    ok = client.refresh()
    value = client.number_value("policy_resolution_timeout_ms", {"merchant": "m-1"}, 1)
    # Then
    assert ok is False
    assert client.is_stale is True
    assert value == 100
    client.close()


def test_client__never_fetched__default_with_error_reason(db):
    # Given: no server at all
    client = FlagsClient(
        f"http://127.0.0.1:{free_port()}",
        "cp_srv_x",
        "production",
        timeout=1,
        start=False,
    )
    client.refresh()
    # When
    answer = client.evaluate("anything", {"merchant": "m"}, "fallback")
    # Then
    assert (answer.value, answer.reason, answer.error_code) == (
        "fallback",
        "ERROR",
        "GENERAL",
    )


def test_client__wrong_key__no_ruleset_default_served(live_server, catalog):
    # Given
    client = FlagsClient(
        live_server.url, "cp_srv_wrong", "production", poll_interval=60
    )
    # When
    value = client.bool_value("sequential_workflow", {"merchant": "m-pilot"}, False)
    # Then
    assert value is False
    assert "401" in client.last_error
    client.close()


def test_client__type_mismatch_and_bad_context__default_never_raises(
    live_server, catalog, server_key
):
    # Given
    client = FlagsClient(live_server.url, server_key, "production", poll_interval=60)
    # When
    wrong_type = client.evaluate(
        "checkout_theme", {"merchant": "m"}, True, value_type="bool"
    )
    bad_context = client.evaluate("checkout_theme", ["not", "a", "mapping"], "x")
    # Then
    assert (wrong_type.value, wrong_type.error_code) == (True, "TYPE_MISMATCH")
    assert bad_context.value == "x" and bad_context.reason == "ERROR"
    client.close()
