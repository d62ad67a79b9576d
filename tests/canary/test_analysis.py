"""Cohort statistics on synthetic data with known answers (no database)."""

from __future__ import annotations

import random

import pytest

from canary import analysis


def _durations(rng: random.Random, n: int, median_ms: float) -> list[float]:
    # log-normal latencies around the median, like real request durations
    return [median_ms * rng.lognormvariate(0, 0.3) for _ in range(n)]


def test_error_rate_compare__treatment_clearly_worse__fail_significant():
    # When
    result = analysis.error_rate_compare(
        treatment_failures=40, treatment_n=500, control_failures=10, control_n=500
    )
    # Then
    assert result.verdict == "fail"
    assert result.p_value < 0.05
    assert result.effect == pytest.approx(0.06)
    assert result.effect_size > 0
    assert result.confidence == pytest.approx(1 - result.p_value)
    low, high = result.interval
    assert low > 0 and high > low
    assert "8.00%" in result.explanation and "fail" in result.explanation


def test_error_rate_compare__known_z_value__matches_textbook():
    # Given: 60/1000 vs 40/1000 -> pooled 0.05, z = 0.02 / sqrt(.05*.95*.002) = 2.052
    # When
    result = analysis.error_rate_compare(
        treatment_failures=60, treatment_n=1000, control_failures=40, control_n=1000
    )
    # Then
    assert result.p_value == pytest.approx(0.0201, abs=0.0005)


def test_error_rate_compare__equal_rates__pass():
    # When
    result = analysis.error_rate_compare(
        treatment_failures=10, treatment_n=1000, control_failures=10, control_n=1000
    )
    # Then
    assert result.verdict == "pass"
    assert result.p_value > 0.4
    assert "No significant increase" in result.explanation


def test_error_rate_compare__treatment_better__pass():
    # When
    result = analysis.error_rate_compare(
        treatment_failures=1, treatment_n=800, control_failures=30, control_n=800
    )
    # Then
    assert result.verdict == "pass"
    assert result.p_value > 0.99


def test_error_rate_compare__no_failures_anywhere__pass():
    # When
    result = analysis.error_rate_compare(
        treatment_failures=0, treatment_n=200, control_failures=0, control_n=200
    )
    # Then
    assert (result.verdict, result.p_value) == ("pass", 1.0)


def test_error_rate_compare__short_data__inconclusive_with_explanation():
    # When
    result = analysis.error_rate_compare(
        treatment_failures=5,
        treatment_n=12,
        control_failures=0,
        control_n=500,
        min_samples=50,
    )
    # Then
    assert result.verdict == "inconclusive"
    assert result.p_value is None
    assert "treatment has 12 observations, 50 needed" in result.explanation


def test_error_rate_compare__significant_but_within_tolerance__pass():
    # Given: 2.2% vs 2.0% on huge cohorts is significant but only 10% worse
    # When
    result = analysis.error_rate_compare(
        treatment_failures=22_000,
        treatment_n=1_000_000,
        control_failures=20_000,
        control_n=1_000_000,
        tolerance=0.2,
    )
    # Then
    assert result.p_value < 0.05
    assert result.verdict == "pass"
    assert "within the 20% tolerance" in result.explanation


def test_error_rate_compare__impossible_counts__value_error():
    # When / Then
    with pytest.raises(ValueError):
        analysis.error_rate_compare(
            treatment_failures=5, treatment_n=3, control_failures=0, control_n=10
        )


def test_duration_compare__treatment_fifty_percent_slower__fail():
    # Given
    rng = random.Random(7)
    treatment, control = _durations(rng, 200, 150.0), _durations(rng, 200, 100.0)
    # When
    result = analysis.duration_compare(
        treatment=treatment, control=control, tolerance=0.2
    )
    # Then
    assert result.verdict == "fail"
    assert result.p_value < 0.001
    assert result.effect == pytest.approx(0.5, abs=0.15)
    assert result.effect_size > 0.3
    assert result.test.startswith("Mann-Whitney U")


def test_duration_compare__same_distribution__pass():
    # Given
    rng = random.Random(11)
    treatment, control = _durations(rng, 300, 100.0), _durations(rng, 300, 100.0)
    # When
    result = analysis.duration_compare(
        treatment=treatment, control=control, tolerance=0.1
    )
    # Then
    assert result.verdict == "pass"
    assert abs(result.effect) < 0.1


def test_duration_compare__same_distribution_many_seeds__false_alarms_near_alpha():
    # Given
    rng = random.Random(2024)
    # When
    fails = sum(
        analysis.duration_compare(
            treatment=_durations(rng, 80, 100.0), control=_durations(rng, 80, 100.0)
        ).verdict
        == "fail"
        for _ in range(200)
    )
    # Then: one-sided alpha 0.05 -> about 10 of 200
    assert 1 <= fails <= 22


def test_error_rate_compare__equal_true_rates_many_seeds__false_alarms_near_alpha():
    # Given
    rng = random.Random(99)
    # When
    fails = 0
    for _ in range(200):
        t = sum(rng.random() < 0.05 for _ in range(400))
        c = sum(rng.random() < 0.05 for _ in range(400))
        result = analysis.error_rate_compare(
            treatment_failures=t, treatment_n=400, control_failures=c, control_n=400
        )
        fails += result.verdict == "fail"
    # Then
    assert 1 <= fails <= 22


def test_duration_compare__short_data__inconclusive():
    # When
    result = analysis.duration_compare(
        treatment=[900.0] * 5, control=[100.0] * 500, min_samples=20
    )
    # Then
    assert result.verdict == "inconclusive"
    assert result.treatment["n"] == 5


def test_cohort_compare__outcomes_provider_shape__routes_by_metric():
    # Given
    rng = random.Random(3)
    cohorts = {
        "treatment": {
            "n": 300,
            "failures": 30,
            "durations": _durations(rng, 300, 200.0),
        },
        "control": {"n": 300, "failures": 3, "durations": _durations(rng, 300, 100.0)},
    }
    # When
    errors = analysis.cohort_compare(cohorts, metric="error_rate")
    latency = analysis.cohort_compare(cohorts, metric="p95_ms")
    # Then
    assert (errors.metric, errors.verdict) == ("error_rate", "fail")
    assert (latency.metric, latency.verdict) == ("duration", "fail")
    assert errors.as_dict()["interval"] == list(errors.interval)
    with pytest.raises(ValueError):
        analysis.cohort_compare(cohorts, metric="vibes")


def test_cohort_compare__empty_cohorts__inconclusive():
    # When
    result = analysis.cohort_compare({}, metric="error_rate")
    # Then
    assert result.verdict == "inconclusive"
