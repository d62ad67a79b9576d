"""The http provider against a live local HTTP server."""

from __future__ import annotations

import time

import pytest

from canary.providers import ProviderError, get_provider
from controlplane.exceptions import InvalidInput


def test_http_measure__status__status_code(live_http, ctx):
    # When
    measurement = get_provider("http").measure(
        {"url": f"{live_http}/status/503", "measure": "status"}, ctx, timeout=2
    )
    # Then
    assert measurement.value == 503.0
    assert measurement.detail["expect_status"] == 200


def test_http_measure__latency__milliseconds(live_http, ctx):
    # When
    measurement = get_provider("http").measure(
        {"url": f"{live_http}/sleep/0.2", "measure": "latency_ms"}, ctx, timeout=3
    )
    # Then
    assert 200.0 <= measurement.value < 2000.0
    assert measurement.detail["unit"] == "ms"
    assert measurement.detail["status"] == 200


def test_http_measure__latency_with_unexpected_status__provider_error(live_http, ctx):
    # When / Then: a fast 500 must not pass a latency check
    with pytest.raises(ProviderError, match="HTTP 500, expected 200"):
        get_provider("http").measure(
            {"url": f"{live_http}/status/500", "measure": "latency_ms"}, ctx, timeout=2
        )


def test_http_measure__expect_status__accepted(live_http, ctx):
    # When
    measurement = get_provider("http").measure(
        {
            "url": f"{live_http}/status/204",
            "measure": "latency_ms",
            "expect_status": 204,
        },
        ctx,
        timeout=2,
    )
    # Then
    assert measurement.value > 0


@pytest.mark.parametrize(
    "path, expected",
    [("data.items.1.queue", 42.5), ("data.items.0.queue", 7.0), ("ready", 1.0)],
)
def test_http_measure__json_path__field_value(live_http, ctx, path, expected):
    # When
    measurement = get_provider("http").measure(
        {"url": f"{live_http}/health", "measure": "json_value", "json_path": path},
        ctx,
        timeout=2,
    )
    # Then
    assert measurement.value == expected
    assert measurement.detail["json_path"] == path


def test_http_measure__json_null__no_data(live_http, ctx):
    # When
    measurement = get_provider("http").measure(
        {"url": f"{live_http}/health", "measure": "json_value", "json_path": "missing"},
        ctx,
        timeout=2,
    )
    # Then
    assert measurement.value is None


@pytest.mark.parametrize(
    "path, message",
    [
        ("data.items.5.queue", "not found"),
        ("label", "not a number"),
        ("nope", "not found"),
    ],
)
def test_http_measure__json_path_unusable__provider_error(
    live_http, ctx, path, message
):
    # When / Then
    with pytest.raises(ProviderError, match=message):
        get_provider("http").measure(
            {"url": f"{live_http}/health", "measure": "json_value", "json_path": path},
            ctx,
            timeout=2,
        )


def test_http_measure__not_json__provider_error(live_http, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="did not answer JSON"):
        get_provider("http").measure(
            {"url": f"{live_http}/text", "measure": "json_value", "json_path": "a"},
            ctx,
            timeout=2,
        )


def test_http_measure__slower_than_timeout__provider_error(live_http, ctx):
    # Given
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="timed out"):
        get_provider("http").measure(
            {"url": f"{live_http}/sleep/2", "measure": "latency_ms"}, ctx, timeout=0.3
        )
    assert time.monotonic() - started < 1.5


def test_http_measure__connection_refused__provider_error(closed_port_url, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="cannot reach"):
        get_provider("http").measure(
            {"url": f"{closed_port_url}/health", "measure": "status"}, ctx, timeout=2
        )


@pytest.mark.parametrize(
    "spec, field",
    [
        ({"measure": "status"}, "spec.url"),
        ({"url": "localhost:80", "measure": "status"}, "spec.url"),
        ({"url": "http://x", "measure": "body"}, "spec.measure"),
        ({"url": "http://x", "measure": "status", "method": "DELETE"}, "spec.method"),
        (
            {"url": "http://x", "measure": "status", "expect_status": 99},
            "spec.expect_status",
        ),
        ({"url": "http://x", "measure": "json_value"}, "spec.json_path"),
        ({"url": "http://x", "measure": "status", "json_path": "a"}, "spec.json_path"),
    ],
)
def test_http_validate_spec__bad_spec__field_error(spec, field):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        get_provider("http").validate_spec(spec)
    assert raised.value.field == field
