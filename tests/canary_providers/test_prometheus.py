"""The prometheus provider against a real Prometheus scraping a test exporter."""

from __future__ import annotations

import time

import pytest

from canary.providers import ProviderError, get_provider
from controlplane.exceptions import InvalidInput

pytestmark = pytest.mark.slow


def test_prometheus_measure__gauge__known_value(prometheus_url, ctx):
    # Given
    provider = get_provider("prometheus")
    # When
    measurement = provider.measure(
        {"url": prometheus_url, "query": "cp_test_latency_seconds"}, ctx, timeout=5
    )
    # Then
    assert measurement.value == pytest.approx(0.123)
    assert measurement.samples == 1
    assert measurement.detail["query"] == "cp_test_latency_seconds"
    assert measurement.detail["series"][0]["metric"]["job"] == "cp_test"


def test_prometheus_measure__ratio_query__computed_value(prometheus_url, ctx):
    # Given
    query = 'sum(cp_test_requests_total{code="500"}) / sum(cp_test_requests_total)'
    # When
    measurement = get_provider("prometheus").measure(
        {"url": prometheus_url, "query": query}, ctx, timeout=5
    )
    # Then
    assert measurement.value == pytest.approx(0.1)


def test_prometheus_measure__url_from_settings__used(prometheus_url, ctx, settings):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "PROMETHEUS_URL": prometheus_url}
    # When
    measurement = get_provider("prometheus").measure(
        {"query": "scalar(cp_test_latency_seconds) * 1000"}, ctx, timeout=5
    )
    # Then
    assert measurement.value == pytest.approx(123.0)
    assert measurement.detail["result_type"] == "scalar"


def test_prometheus_measure__empty_vector__no_data(prometheus_url, ctx):
    # When
    measurement = get_provider("prometheus").measure(
        {"url": prometheus_url, "query": "cp_test_metric_that_does_not_exist"},
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value is None
    assert measurement.samples == 0
    assert measurement.detail["series_count"] == 0


@pytest.mark.parametrize("query", ["cp_test_nan", "scalar(cp_test_nan)"])
def test_prometheus_measure__nan__no_data(prometheus_url, ctx, query):
    # When
    measurement = get_provider("prometheus").measure(
        {"url": prometheus_url, "query": query}, ctx, timeout=5
    )
    # Then
    assert measurement.value is None


def test_prometheus_measure__several_series__error(prometheus_url, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="2 series"):
        get_provider("prometheus").measure(
            {"url": prometheus_url, "query": "cp_test_requests_total"}, ctx, timeout=5
        )


def test_prometheus_measure__several_series_with_aggregate__combined(
    prometheus_url, ctx
):
    # When
    measurement = get_provider("prometheus").measure(
        {"url": prometheus_url, "query": "cp_test_requests_total", "aggregate": "sum"},
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value == pytest.approx(100.0)
    assert measurement.samples == 2


def test_prometheus_measure__bad_promql__provider_error(prometheus_url, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="bad_data") as raised:
        get_provider("prometheus").measure(
            {"url": prometheus_url, "query": "sum(cp_test_requests_total"},
            ctx,
            timeout=5,
        )
    assert raised.value.detail["status"] == 400


def test_prometheus_measure__unreachable__provider_error(closed_port_url, ctx):
    # Given
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="cannot reach"):
        get_provider("prometheus").measure(
            {"url": closed_port_url, "query": "up"}, ctx, timeout=2
        )
    assert time.monotonic() - started < 2


def test_prometheus_measure__not_prometheus__provider_error(live_http, ctx):
    # When / Then: the HTTP server answers 404 with a JSON body that is not
    # Prometheus' envelope
    with pytest.raises(ProviderError, match="Prometheus query failed"):
        get_provider("prometheus").measure(
            {"url": live_http, "query": "up"}, ctx, timeout=2
        )


@pytest.mark.parametrize(
    "spec, field",
    [
        ({}, "spec.query"),
        ({"query": ""}, "spec.query"),
        ({"query": "up", "url": "ftp://x"}, "spec.url"),
        ({"query": "up", "aggregate": "median"}, "spec.aggregate"),
        ({"query": "up", "step": 5}, "spec.step"),
    ],
)
def test_prometheus_validate_spec__bad_spec__field_error(spec, field):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        get_provider("prometheus").validate_spec(spec)
    assert raised.value.field == field


def test_prometheus_measure__comparison_query__value_and_comparison(
    prometheus_url, ctx
):
    # When: the treated series against the other one
    measurement = get_provider("prometheus").measure(
        {
            "url": prometheus_url,
            "query": 'sum(cp_test_requests_total{code="500"})',
            "comparison_query": 'sum(cp_test_requests_total{code="200"})',
        },
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value == pytest.approx(10.0)
    assert measurement.detail["comparison_value"] == pytest.approx(90.0)
    assert measurement.detail["comparison_query"].endswith('{code="200"})')
