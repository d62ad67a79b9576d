"""Always-valid merchant-level comparisons: guarantees checked by simulation.

No database. The simulations are seeded; every rate below is measured over
a stated number of runs, and the bounds allow for that simulation error.
numpy only generates the data; ``canary.sequential`` itself is pure.

The fleet: 100 merchants whose traffic shares are log-normal (sigma 0.5),
5-50 events/s in total (uniform per run), 20% of merchants with 5x the
error rate (5% instead of 1%) in both arms, a slow common drift (+20% on
every rate over the phase, so the current window differs from the
pre-rollout baseline for everyone), a 6 h baseline look-back (the recommended one), one look every
30 s (the check interval).
"""

from __future__ import annotations

import json
import math
from statistics import NormalDist

import numpy as np
import pytest

from canary import power
from canary import sequential as sq
from canary.templates_data import PLANS

INTERVAL = 30
BASELINE_SECONDS = sq.DEFAULT_BASELINE_SECONDS
MERCHANTS = 100


def _fleet(
    rng: np.random.Generator, total: float | None = None, merchants: int = MERCHANTS
):
    total = rng.uniform(5, 50) if total is None else total
    share = rng.lognormal(0, 0.5, merchants)
    rate = total * share / share.sum()
    error = np.full(merchants, 0.01)
    error[rng.random(merchants) < 0.2] *= 5
    return rate, error


def _run_phase(
    rng: np.random.Generator,
    rate: np.ndarray,
    error: np.ndarray,
    treated: np.ndarray,
    seconds: float,
    *,
    effect: float = 0.0,
    drift: float = 0.2,
    stop_on: tuple[str, ...] = (sq.WORSE,),
) -> list[sq.Comparison]:
    """Return the comparison at every look of one phase (until stop_on)."""
    base_n = rng.poisson(rate * BASELINE_SECONDS)
    base_f = rng.binomial(base_n, error)
    looks = int(seconds // INTERVAL)
    progress = (np.arange(looks) + 1) / looks
    rates = np.clip(np.outer(1 + drift * progress, error) + effect * treated, 0, 1)
    events = rng.poisson(np.outer(np.ones(looks), rate * INTERVAL))
    failures = rng.binomial(events, rates)
    cum_n, cum_f = events.cumsum(0).tolist(), failures.cumsum(0).tolist()
    baseline = [sq.Window(int(n), int(f)) for n, f in zip(base_n, base_f, strict=True)]
    treated_idx = np.flatnonzero(treated).tolist()
    control_idx = np.flatnonzero(~treated).tolist()
    results = []
    for look in range(looks):
        current = [
            sq.Window(n, f) for n, f in zip(cum_n[look], cum_f[look], strict=True)
        ]
        result = sq.compare(
            metric=sq.ERROR_RATE,
            treated=[
                sq.MerchantAggregate(str(i), baseline[i], current[i])
                for i in treated_idx
            ],
            control=[
                sq.MerchantAggregate(str(i), baseline[i], current[i])
                for i in control_idx
            ],
        )
        results.append(result)
        if result.decision in stop_on:
            break
    return results


def _treated(
    rng: np.random.Generator, count: int, merchants: int = MERCHANTS
) -> np.ndarray:
    mask = np.zeros(merchants, bool)
    mask[rng.permutation(merchants)[:count]] = True
    return mask


def _three_se(rate: float, runs: int) -> float:
    return 3 * math.sqrt(rate * (1 - rate) / runs)


@pytest.fixture(scope="module")
def healthy_runs() -> list[list[sq.Comparison]]:
    # 1,000 healthy 10% phases (900 s, the template's min_duration), looked
    # at every interval to the end (not stopped at the first decision, so
    # every look counts against the guarantee).
    rng = np.random.default_rng(20261201)
    runs = []
    for _ in range(1000):
        rate, error = _fleet(rng)
        runs.append(_run_phase(rng, rate, error, _treated(rng, 10), 900, stop_on=()))
    return runs


def test_compare__1000_healthy_checked_every_interval__false_worse_within_alpha(
    healthy_runs,
):
    # Given: 1,000 healthy comparisons with 30 looks each
    # When
    worse = sum(
        any(c.decision == sq.WORSE for c in looks) for looks in healthy_runs
    ) / len(healthy_runs)
    # Then: alpha + 3 standard errors of a rate alpha over 1,000 runs
    assert worse <= sq.DEFAULT_ALPHA + _three_se(sq.DEFAULT_ALPHA, 1000)


def test_compare__1000_healthy_checked_every_interval__interval_covers_truth(
    healthy_runs,
):
    # Given: the true difference is 0 in every run; the guarantee is that
    # the interval covers it at all looks at once with prob. >= 1 - alpha
    # (stronger than the false-worse rate, which needs lower > margin)
    # When
    missed = sum(
        any(c.lower > 0 or c.upper < 0 for c in looks) for looks in healthy_runs
    ) / len(healthy_runs)
    # Then
    assert missed <= sq.DEFAULT_ALPHA + _three_se(sq.DEFAULT_ALPHA, 1000)


def test_compare__plus_2pp_over_1pct__worse_within_template_phases():
    # Given: 200 regressed canaries (+2 points on every treated merchant's
    # rate from the start) through the pilot-10-50-100 phases before 100%,
    # each phase lasting only its min_duration (a prove phase would wait
    # longer: this is the harder case)
    phases = [p for p in PLANS["pilot-10-50-100"]["phases"] if p["name"] != "100%"]
    sizes = [1 if p["target_type"] == "pilot" else p["percentage"] for p in phases]
    rng = np.random.default_rng(9)
    detected = 0
    # When
    for _ in range(200):
        rate, error = _fleet(rng)
        order = rng.permutation(MERCHANTS)
        for size, phase in zip(sizes, phases, strict=True):
            treated = np.zeros(MERCHANTS, bool)
            treated[order[:size]] = True
            looks = _run_phase(
                rng, rate, error, treated, phase["min_duration"], effect=0.02
            )
            if looks[-1].decision == sq.WORSE:
                detected += 1
                break
    # Then
    assert detected / 200 >= 0.95


def test_compare__healthy_with_enough_traffic__not_worse_in_most_runs():
    # Given: healthy 50% phases of a fleet sending 50 events/s, held up to
    # the template's max_duration (a prove phase waits while not yet)
    phase = next(p for p in PLANS["pilot-10-50-100"]["phases"] if p["name"] == "50%")
    rng = np.random.default_rng(11)
    reached = 0
    # When
    for _ in range(50):
        rate, error = _fleet(rng, total=50.0)
        looks = _run_phase(
            rng,
            rate,
            error,
            _treated(rng, 50),
            phase["max_duration"],
            stop_on=(sq.NOT_WORSE, sq.WORSE),
        )
        reached += looks[-1].decision == sq.NOT_WORSE
    # Then
    assert reached / 50 >= 0.9


def _detection_rate(effect: float, runs: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    rate = np.full(MERCHANTS, 3 / 60)  # 3 events per minute per merchant
    error = np.full(MERCHANTS, 0.01)
    hits = 0
    for _ in range(runs):
        looks = _run_phase(
            rng, rate, error, _treated(rng, 10), 900, effect=effect, drift=0.0
        )
        hits += looks[-1].decision == sq.WORSE
    return hits / runs


def test_minimum_detectable_effect__simulated__agrees_within_a_factor():
    # Given: 10 treated and 90 control merchants, 3 events/min each, 15 min
    mde = power.minimum_detectable_effect(
        metric=sq.ERROR_RATE,
        treated_merchants=10,
        control_merchants=90,
        events_per_merchant_per_minute=3.0,
        phase_seconds=900,
        baseline_seconds=BASELINE_SECONDS,
        baseline_rate=0.01,
    )
    # When
    at_mde = _detection_rate(mde, 100, seed=3)
    at_half = _detection_rate(mde / 2, 100, seed=4)
    # Then: about 80% at the MDE (it counts the last look only, so a bit
    # more), clearly less at half of it
    assert 0.6 <= at_mde <= 1.0
    assert at_half < 0.6


def test_minimum_detectable_effect__more_traffic__smaller():
    # Given
    common = dict(
        metric=sq.ERROR_RATE,
        treated_merchants=10,
        control_merchants=90,
        phase_seconds=900,
        baseline_seconds=BASELINE_SECONDS,
        heavy_share=0.2,
        heavy_factor=5.0,
    )
    # When
    low = power.minimum_detectable_effect(events_per_merchant_per_minute=3, **common)
    high = power.minimum_detectable_effect(events_per_merchant_per_minute=30, **common)
    # Then
    assert high < low
    assert sq.DEFAULT_MARGINS[sq.ERROR_RATE] < high


def _window(events: int, failures: int = 0, p50=None, p95=None, p99=None):
    return sq.Window(events, failures, p50_ms=p50, p95_ms=p95, p99_ms=p99)


def test_compare__no_treated_events__not_yet_no_data():
    # Given: the first look after an advance, nothing reported yet
    treated = [sq.MerchantAggregate("m1", _window(1000, 10), _window(0))]
    # When
    result = sq.compare(metric="error_rate", treated=treated)
    # Then
    assert result.decision == sq.NOT_YET
    assert result.rule == "no_data"
    assert result.treated_events == 0


def test_compare__pilot_slower_than_fleet_not_than_itself__not_worse():
    # Given: a pilot at 300 ms p95 (the fleet: 100 ms) as slow as its own
    # baseline, with plenty of events
    pilot = sq.MerchantAggregate(
        "slow", _window(200_000, p50=150, p95=300), _window(100_000, p50=150, p95=300)
    )
    fleet = [
        sq.MerchantAggregate(
            f"m{i}", _window(50_000, p50=50, p95=100), _window(25_000, p50=50, p95=100)
        )
        for i in range(20)
    ]
    # When
    result = sq.compare(metric="p95", treated=[pilot], control=fleet)
    # Then
    assert result.decision == sq.NOT_WORSE
    assert result.rule == "upper_bound_below_margin"
    assert result.estimate == pytest.approx(0.0, abs=1e-3)
    assert result.lower < 0 < result.upper < result.margin


def test_compare__p95_up_30pct_on_many_merchants__worse():
    # Given: 10 treated merchants 30% slower at p95 than their baselines
    def merchant(i: int, slowdown: float) -> sq.MerchantAggregate:
        return sq.MerchantAggregate(
            f"m{i}",
            _window(20_000, p50=80, p95=200),
            _window(2_000, p50=80 * slowdown, p95=200 * slowdown),
        )

    treated = [merchant(i, 1.3) for i in range(10)]
    control = [merchant(i, 1.0) for i in range(10, 100)]
    # When
    result = sq.compare(metric="p95", treated=treated, control=control)
    # Then
    assert result.decision == sq.WORSE
    assert result.estimate == pytest.approx(0.3)
    assert result.lower > result.margin == sq.DEFAULT_MARGINS["p95"]


def test_compare__full_rollout_with_frozen_control__drift_from_last_window():
    # Given: a 100% phase; the control's last window showed +2 points drift
    treated = [
        sq.MerchantAggregate(f"t{i}", _window(50_000, 500), _window(50_000, 1500))
        for i in range(30)
    ]
    last_control = [
        sq.MerchantAggregate(f"c{i}", _window(50_000, 500), _window(50_000, 1500))
        for i in range(30)
    ]
    # When
    with_drift = sq.compare(
        metric="error_rate",
        treated=treated,
        control=last_control,
        control_is_frozen=True,
    )
    alone = sq.compare(metric="error_rate", treated=treated)
    # Then
    assert with_drift.drift_correction == "control's last window"
    assert with_drift.estimate == pytest.approx(0.0)
    assert with_drift.decision == sq.NOT_WORSE
    assert alone.drift_correction == "none"
    assert alone.estimate == pytest.approx(0.02)
    assert alone.decision == sq.WORSE


def test_compare__undecided__explains_more_traffic_needed():
    # Given
    treated = [sq.MerchantAggregate("m1", _window(5000, 50), _window(300, 3))]
    # When
    result = sq.compare(metric="error_rate", treated=treated)
    # Then
    assert result.decision == sq.NOT_YET
    assert result.rule == "interval_contains_margin"
    assert result.more_events > 1
    assert "x the current events needed" in result.explanation


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "p42"}, "unknown metric"),
        ({"metric": "error_rate", "margin": 0}, "margin"),
        ({"metric": "error_rate", "margin": math.nan}, "margin"),
        ({"metric": "error_rate", "alpha": 1.0}, "alpha"),
    ],
)
def test_compare__bad_arguments__value_error(kwargs, message):
    # When / Then
    with pytest.raises(ValueError, match=message):
        sq.compare(treated=[], **kwargs)


def test_compare__failures_above_events__value_error():
    # Given
    treated = [sq.MerchantAggregate("m1", _window(10, 11), _window(10, 1))]
    # When / Then
    with pytest.raises(ValueError, match="m1"):
        sq.compare(metric="error_rate", treated=treated)


def test_cs_half_width__more_information__narrower_and_wider_than_fixed():
    # Given
    rhos = sq.mixture_rhos(0.005, 0.04)
    # When
    widths = [
        cs_width
        for cs_width in (sq.cs_half_width(v, rhos, 0.04) for v in (1e-4, 1e-5, 1e-6))
    ]
    # Then: it shrinks with information, and is always wider than the
    # fixed-sample interval it replaces (the price of looking every time)
    assert widths[0] > widths[1] > widths[2]
    for width, variance in zip(widths, (1e-4, 1e-5, 1e-6), strict=True):
        assert width > 2.05 * math.sqrt(variance)


def _latency_phase(
    rng: np.random.Generator,
    slowdown: float,
    merchants: int = 40,
    *,
    counts: bool = False,
    total: float | None = None,
) -> list[sq.Comparison]:
    """Return the p95 comparisons of one 50% phase (1800 s, a look a minute)
    built from sampled per-merchant latencies, not from a model."""
    total = rng.uniform(5, 50) if total is None else total
    share = rng.lognormal(0, 0.5, merchants)
    rate = total * share / share.sum()
    # Merchants differ in latency (log-normal medians around 120 ms, 20%
    # of them 3x slower), the same in both arms.
    median = 120 * rng.lognormal(0, 0.3, merchants)
    median[rng.random(merchants) < 0.2] *= 3
    treated = _treated(rng, merchants // 2, merchants)
    looks, minute = 30, 60

    def window(sample: np.ndarray, threshold: float) -> sq.Window:
        p50, p95 = np.quantile(sample, [0.5, 0.95]) if len(sample) else (0, 0)
        above = int((sample > threshold).sum()) if counts else None
        return sq.Window(
            len(sample), 0, p50_ms=float(p50), p95_ms=float(p95), p95_above=above
        )

    baseline, samples, sizes = [], [], []
    for i in range(merchants):
        # The 6 h baseline's order statistics drawn exactly (Beta-distributed
        # uniforms through the log-normal's inverse), not 10^5 samples each.
        size = int(rng.poisson(rate[i] * BASELINE_SECONDS))
        p50, p95 = (
            median[i] * math.exp(0.5 * NormalDist().inv_cdf(rng.beta(k, size + 1 - k)))
            for k in (max(1, round(0.5 * size)), max(1, round(0.95 * size)))
        )
        baseline.append(sq.Window(size, 0, p50_ms=p50, p95_ms=p95))
        per_look = rng.poisson(rate[i] * minute, looks)
        factor = slowdown if treated[i] else 1.0
        samples.append(median[i] * factor * rng.lognormal(0, 0.5, int(per_look.sum())))
        sizes.append(per_look.cumsum().tolist())
    results = []
    for look in range(looks):
        current = [
            window(samples[i][: sizes[i][look]], baseline[i].p95_ms)
            for i in range(merchants)
        ]
        aggregates = [
            sq.MerchantAggregate(str(i), baseline[i], current[i])
            for i in range(merchants)
        ]
        result = sq.compare(
            metric="p95",
            treated=[a for a, t in zip(aggregates, treated, strict=True) if t],
            control=[a for a, t in zip(aggregates, treated, strict=True) if not t],
        )
        results.append(result)
        if result.decision == sq.WORSE:
            break
    return results


def test_compare__p95_sampled_latencies__healthy_rarely_worse_and_30pct_caught():
    # Given: 40 healthy and 40 regressed (+30% on every treated latency)
    # 50% phases of 40 merchants, p95 from sampled latencies; 40 runs give a
    # weak bound on the false rate (3 SE = 10.3 points), stated as such
    rng = np.random.default_rng(30)
    # When
    healthy = [_latency_phase(rng, 1.0) for _ in range(40)]
    regressed = [_latency_phase(rng, 1.3) for _ in range(40)]
    false_worse = sum(r[-1].decision == sq.WORSE for r in healthy) / 40
    caught = sum(r[-1].decision == sq.WORSE for r in regressed) / 40
    # Then
    assert false_worse <= sq.DEFAULT_ALPHA + _three_se(sq.DEFAULT_ALPHA, 40)
    assert caught >= 0.9


def test_compare__p95_exceedance_counts__healthy_within_alpha_every_look():
    # Given: 400 healthy 50% phases whose windows count the events above
    # each merchant's baseline p95, looked at every minute to the end
    rng = np.random.default_rng(31)
    # When
    runs = [_latency_phase(rng, 1.0, counts=True) for _ in range(400)]
    false_worse = sum(r[-1].decision == sq.WORSE for r in runs) / 400
    # Then: the counts decide the worse side, within alpha
    assert all(r[-1].exceedance is not None for r in runs)
    assert false_worse <= sq.DEFAULT_ALPHA + _three_se(sq.DEFAULT_ALPHA, 400)


def test_compare__p95_up_30pct__exceedance_catches_sooner_than_quantiles():
    # Given: the same 40 regressed phases of 8 merchants at 2 requests/s,
    # with and without the counts
    seeds = range(40)

    def phase(seed: int, counts: bool) -> list[sq.Comparison]:
        rng = np.random.default_rng(seed)
        return _latency_phase(rng, 1.3, merchants=8, counts=counts, total=2.0)

    # When
    plain = [phase(s, False) for s in seeds]
    counted = [phase(s, True) for s in seeds]
    # Then: every regression caught, by the counts' rule, and at a median
    # look earlier than the quantile difference alone manages
    assert all(r[-1].decision == sq.WORSE for r in counted)
    rules = [r[-1].rule for r in counted]
    by_counts = rules.count("exceedance_lower_bound_above_zero_estimate_above_margin")
    assert by_counts >= 0.9 * len(rules)
    looks_counted = np.median([len(r) for r in counted])
    assert looks_counted < np.median([len(r) for r in plain])
    worse = next(r[-1] for r in counted if r[-1].exceedance is not None)
    assert worse.lower > 0 and "above their baseline p95" in worse.explanation


def test_compare__p95_few_events_expected_above__counts_do_not_decide():
    # Given: a one-merchant pilot with 47 events, 8 of them above a p95 its
    # 600-event baseline says 5% exceed (2.4 expected: too few for the
    # binomial's normal approximation)
    base = sq.Window(600, 0, p50_ms=100.0, p95_ms=225.0)
    current = sq.Window(47, 0, p50_ms=110.0, p95_ms=240.0, p95_above=8)
    # When
    result = sq.compare(
        metric="p95", treated=[sq.MerchantAggregate("m-pilot", base, current)]
    )
    # Then: the quantile difference decides (not worse here), not the counts
    assert result.exceedance is None
    assert result.decision != sq.WORSE


def test_comparison_as_dict__no_data__json_without_non_finite_numbers():
    # Given
    result = sq.compare(metric="p95", treated=[])
    # When
    text = json.dumps(result.as_dict(), allow_nan=False)
    # Then
    assert json.loads(text)["more_events"] is None
