"""The outcomes provider over outcome events stored in the database."""

from __future__ import annotations

import statistics
from datetime import timedelta

import pytest
from django.utils import timezone

from canary.models import OutcomeEvent
from canary.providers import MeasureContext, get_provider
from canary.providers.outcomes import MAX_DURATIONS, percentile
from canary.services.outcomes import outcome_events_ingest
from controlplane.exceptions import InvalidInput


def _events(
    variation: str, durations: list[float], failures: int, **extra
) -> list[dict]:
    return [
        {
            "flag": extra.get("flag", "sequential_workflow"),
            "merchant": f"m-{index % 7}",
            "variation": variation,
            "outcome": "failure" if index < failures else "success",
            "duration_ms": duration,
            "name": extra.get("name", "checkout"),
            "occurred_at": extra.get("occurred_at", timezone.now()).isoformat(),
        }
        for index, duration in enumerate(durations)
    ]


@pytest.fixture
def cohorts(environments):
    """100 treatment events (10 failures, 1..100 ms), 50 control (1 failure,
    1..50 ms), plus noise that must not count."""
    outcome_events_ingest(
        environment="production",
        events=[
            *_events("on", [float(d) for d in range(1, 101)], failures=10),
            *_events("off", [float(d) for d in range(1, 51)], failures=1),
            # another flag, another environment's name, an old event
            *_events("on", [999.0] * 5, failures=5, flag="other_flag"),
            *_events(
                "on",
                [999.0] * 5,
                failures=5,
                occurred_at=timezone.now() - timedelta(hours=3),
            ),
        ],
    )
    outcome_events_ingest(
        environment="staging", events=_events("on", [999.0] * 5, failures=5)
    )
    return environments


@pytest.mark.parametrize(
    "metric, expected", [("error_rate", 0.1), ("p50_ms", 50.5), ("p95_ms", 95.05)]
)
def test_outcomes_measure__treatment_metric__value(cohorts, ctx, metric, expected):
    # When
    measurement = get_provider("outcomes").measure({"metric": metric}, ctx, timeout=5)
    # Then
    assert measurement.value == pytest.approx(expected)
    assert measurement.samples == 100


def test_outcomes_measure__cohorts__split_by_variation(cohorts, ctx):
    # When
    measurement = get_provider("outcomes").measure(
        {"metric": "error_rate"}, ctx, timeout=5
    )
    # Then
    treatment, control = (
        measurement.cohorts["treatment"],
        measurement.cohorts["control"],
    )
    assert (treatment["n"], treatment["failures"]) == (100, 10)
    assert (control["n"], control["failures"]) == (50, 1)
    assert control["error_rate"] == pytest.approx(0.02)
    assert control["p50"] == pytest.approx(25.5)
    assert control["p95"] == pytest.approx(47.55)
    assert treatment["durations"] == [float(d) for d in range(1, 101)]
    assert sorted(control["durations"]) == [float(d) for d in range(1, 51)]
    assert measurement.detail["control"]["n"] == 50
    assert "durations" not in measurement.detail["treatment"]


def test_outcomes_measure__until__excludes_later_events(cohorts, ctx):
    # Given
    old = timezone.now() - timedelta(hours=3)
    window_ctx = MeasureContext(
        flag_key=ctx.flag_key,
        environment_key="production",
        treatment_variation="on",
        since=old - timedelta(minutes=1),
        until=old + timedelta(minutes=1),
    )
    # When
    measurement = get_provider("outcomes").measure(
        {"metric": "error_rate"}, window_ctx, timeout=5
    )
    # Then: only the five old failures
    assert measurement.samples == 5
    assert measurement.value == 1.0


def test_outcomes_measure__window__narrows_since(cohorts, ctx):
    # Given: the phase started 4 hours ago, the check looks at the last hour
    long_ctx = MeasureContext(
        flag_key=ctx.flag_key,
        environment_key="production",
        treatment_variation="on",
        since=timezone.now() - timedelta(hours=4),
    )
    provider = get_provider("outcomes")
    # When
    whole_phase = provider.measure({"metric": "error_rate"}, long_ctx, timeout=5)
    last_hour = provider.measure(
        {"metric": "error_rate", "window": 3600}, long_ctx, timeout=5
    )
    # Then
    assert whole_phase.samples == 105
    assert last_hour.samples == 100


def test_outcomes_measure__name_filter__only_that_name(cohorts, ctx):
    # Given
    outcome_events_ingest(
        environment="production",
        events=_events("on", [5.0] * 4, failures=4, name="payment"),
    )
    # When
    measurement = get_provider("outcomes").measure(
        {"metric": "error_rate", "name": "payment"}, ctx, timeout=5
    )
    # Then
    assert (measurement.samples, measurement.value) == (4, 1.0)
    assert measurement.cohorts["control"]["n"] == 0


def test_outcomes_measure__no_events__no_data(environments, ctx):
    # When
    measurement = get_provider("outcomes").measure({"metric": "p95_ms"}, ctx, timeout=5)
    # Then
    assert measurement.value is None
    assert measurement.samples == 0
    assert measurement.cohorts["treatment"]["error_rate"] is None


def test_outcomes_measure__events_without_duration__error_rate_only(environments, ctx):
    # Given
    events = _events("on", [0.0] * 3, failures=1)
    for event in events:
        del event["duration_ms"]
    outcome_events_ingest(environment="production", events=events)
    provider = get_provider("outcomes")
    # When
    error_rate = provider.measure({"metric": "error_rate"}, ctx, timeout=5)
    p95 = provider.measure({"metric": "p95_ms"}, ctx, timeout=5)
    # Then
    assert error_rate.value == pytest.approx(1 / 3)
    assert p95.value is None
    assert p95.samples == 3


def test_outcomes_measure__large_cohort__exact_percentiles_and_bounded_durations(
    environments, ctx
):
    # Given: more timed events than the durations sketch holds
    count = MAX_DURATIONS + 500
    durations = [float((index * 7919) % 10_000) / 10 for index in range(count)]
    outcome_events_ingest(
        environment="production", events=_events("on", durations[:5000], failures=0)
    )
    # When
    measurement = get_provider("outcomes").measure(
        {"metric": "p95_ms"}, ctx, timeout=10
    )
    # Then
    ordered = sorted(durations)
    assert measurement.value == pytest.approx(percentile(ordered, 0.95))
    sketch = measurement.cohorts["treatment"]["durations"]
    assert len(sketch) == MAX_DURATIONS
    assert sketch[0] == ordered[0] and sketch[-1] == ordered[-1]
    assert statistics.median(sketch) == pytest.approx(
        statistics.median(ordered), rel=0.01
    )


@pytest.mark.parametrize(
    "values, fraction, expected",
    [([1.0], 0.95, 1.0), ([1.0, 2.0], 0.5, 1.5), ([1.0, 2.0, 3.0, 4.0], 0.95, 3.85)],
)
def test_percentile__values__linear_interpolation(values, fraction, expected):
    # When / Then
    assert percentile(values, fraction) == pytest.approx(expected)


@pytest.mark.parametrize(
    "spec, field",
    [
        ({}, "spec.metric"),
        ({"metric": "p999_ms"}, "spec.metric"),
        ({"metric": "error_rate", "window": 0}, "spec.window"),
        ({"metric": "error_rate", "window": "1h"}, "spec.window"),
        ({"metric": "error_rate", "name": ""}, "spec.name"),
    ],
)
def test_outcomes_validate_spec__bad_spec__field_error(spec, field):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        get_provider("outcomes").validate_spec(spec)
    assert raised.value.field == field


def test_outcome_events_stored__count_matches(cohorts):
    # Then
    assert OutcomeEvent.objects.filter(environment__key="production").count() == 160


def test_outcomes_measure__compare_quantile__counts_events_above_baseline(cohorts, ctx):
    # Given: the 100 treatment events spread over m-0..m-6 (1..100 ms) and
    # baselines for m-0 (p95 50 ms) and m-1 (p95 90 ms) only
    from dataclasses import replace

    durations: dict[str, list[float]] = {}
    for index in range(100):
        durations.setdefault(f"m-{index % 7}", []).append(float(index + 1))
    baseline = {
        "merchants": {
            "m-0": {"events": 500, "p95_ms": 50.0},
            "m-1": {"events": 500, "p95_ms": 90.0},
        }
    }
    compare_ctx = replace(ctx, compare=True, baseline=baseline)
    # When
    measurement = get_provider("outcomes").measure(
        {"metric": "p95_ms"}, compare_ctx, timeout=5
    )
    # Then: strictly slower than the merchant's own threshold; no count
    # without a baseline
    treated = measurement.merchants["treatment"]
    assert treated["m-0"]["p95_above"] == sum(d > 50 for d in durations["m-0"])
    assert treated["m-1"]["p95_above"] == sum(d > 90 for d in durations["m-1"])
    assert treated["m-1"]["p95_above"] > 0
    assert treated["m-2"]["p95_above"] is None
    assert (
        "p95_above"
        not in get_provider("outcomes")
        .measure({"metric": "error_rate"}, compare_ctx, timeout=5)
        .merchants["treatment"]["m-0"]
    )
