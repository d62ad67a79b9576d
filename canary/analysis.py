"""Cohort statistics: is the treatment cohort worse than the control cohort?

Pure functions over plain numbers (scipy for the distributions, no Django).
Two tests, both one-sided because a canary only asks "is the treatment
worse?":

* error rate: a two-proportion z-test (pooled), H1: p_treatment > p_control;
* duration: Mann-Whitney U, H1: treatment durations tend to be larger.

A cohort with fewer than ``min_samples`` observations gives an explicit
``inconclusive`` (never a pass). A difference fails only when it is both
statistically significant (p < alpha) and larger than the practical
``tolerance`` (relative: 0.2 = 20% worse), so a huge sample does not fail a
rollout for a negligible change.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from scipy import stats

PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"

DEFAULT_ALPHA = 0.05
DEFAULT_MIN_SAMPLES = {"error_rate": 50, "duration": 20}


@dataclass(frozen=True)
class Comparison:
    """The result of comparing the treatment cohort with the control cohort.

    ``effect`` is the raw difference in the metric's unit (error rate
    points, or the relative change of the median duration); ``effect_size``
    is standardised (Cohen's h for proportions, the rank-biserial
    correlation for Mann-Whitney U). ``confidence`` is ``1 - p_value``: how
    sure the test is that the treatment is worse.
    """

    metric: str
    verdict: str
    test: str
    treatment: dict
    control: dict
    effect: float | None
    effect_size: float | None
    p_value: float | None
    confidence: float | None
    alpha: float
    tolerance: float
    min_samples: int
    explanation: str
    interval: tuple[float, float] | None = None

    def as_dict(self) -> dict:
        data = asdict(self)
        data["interval"] = list(self.interval) if self.interval else None
        return data


def _pct(value: float) -> str:
    return f"{value * 100:.2f}%"


def _short(
    metric: str,
    test: str,
    treatment: dict,
    control: dict,
    min_samples: int,
    alpha: float,
    tolerance: float,
) -> Comparison:
    short = [
        f"{name} has {cohort['n']}"
        for name, cohort in (("treatment", treatment), ("control", control))
        if cohort["n"] < min_samples
    ]
    return Comparison(
        metric=metric,
        verdict=INCONCLUSIVE,
        test=test,
        treatment=treatment,
        control=control,
        effect=None,
        effect_size=None,
        p_value=None,
        confidence=None,
        alpha=alpha,
        tolerance=tolerance,
        min_samples=min_samples,
        explanation=(
            f"Not enough data to compare {metric.replace('_', ' ')}: "
            f"{' and '.join(short)} observations, {min_samples} needed per cohort. "
            "Waiting for more data (inconclusive, not a pass)."
        ),
    )


def error_rate_compare(
    *,
    treatment_failures: int,
    treatment_n: int,
    control_failures: int,
    control_n: int,
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES["error_rate"],
    tolerance: float = 0.0,
) -> Comparison:
    """Compare error rates with a one-sided two-proportion z-test.

    Fail when the treatment's error rate is significantly higher (p <
    ``alpha``) and higher than ``control_rate * (1 + tolerance)``; pass
    otherwise; inconclusive when either cohort has fewer than
    ``min_samples`` events. Raise ValueError for impossible counts.
    """
    for name, failures, n in (
        ("treatment", treatment_failures, treatment_n),
        ("control", control_failures, control_n),
    ):
        if n < 0 or failures < 0 or failures > n:
            raise ValueError(f"{name}: failures must be within 0..n")
    test = "two-proportion z-test (one-sided)"
    p_t = treatment_failures / treatment_n if treatment_n else 0.0
    p_c = control_failures / control_n if control_n else 0.0
    treatment = {"n": treatment_n, "failures": treatment_failures, "error_rate": p_t}
    control = {"n": control_n, "failures": control_failures, "error_rate": p_c}
    if treatment_n < min_samples or control_n < min_samples:
        return _short(
            "error_rate", test, treatment, control, min_samples, alpha, tolerance
        )
    diff = p_t - p_c
    pooled = (treatment_failures + control_failures) / (treatment_n + control_n)
    se_pooled = math.sqrt(pooled * (1 - pooled) * (1 / treatment_n + 1 / control_n))
    if se_pooled == 0:
        # Both cohorts all-success (or all-failure): no difference to test.
        p_value = 1.0
    else:
        p_value = float(stats.norm.sf(diff / se_pooled))
    se = math.sqrt(p_t * (1 - p_t) / treatment_n + p_c * (1 - p_c) / control_n)
    z_crit = float(stats.norm.ppf(1 - alpha / 2))
    interval = (diff - z_crit * se, diff + z_crit * se)
    cohen_h = 2 * math.asin(math.sqrt(p_t)) - 2 * math.asin(math.sqrt(p_c))
    allowed = p_c * (1 + tolerance)
    significant = p_value < alpha
    material = p_t > allowed
    verdict = FAIL if significant and material else PASS
    level = f"{(1 - alpha) * 100:.0f}%"
    head = (
        f"Treatment error rate {_pct(p_t)} ({treatment_failures}/{treatment_n}) vs control "
        f"{_pct(p_c)} ({control_failures}/{control_n}): difference {diff * 100:+.2f} points "
        f"({level} CI {interval[0] * 100:+.2f} to {interval[1] * 100:+.2f}), p = {p_value:.3g}."
    )
    if verdict == FAIL:
        tail = (
            f" The treatment is worse with {(1 - p_value) * 100:.1f}% confidence and beyond the "
            f"{tolerance:.0%} tolerance: fail."
        )
    elif significant:
        tail = f" Significantly higher, but within the {tolerance:.0%} tolerance: pass."
    else:
        tail = f" No significant increase at alpha {alpha:g}: pass."
    return Comparison(
        metric="error_rate",
        verdict=verdict,
        test=test,
        treatment=treatment,
        control=control,
        effect=diff,
        effect_size=cohen_h,
        p_value=p_value,
        confidence=1 - p_value,
        alpha=alpha,
        tolerance=tolerance,
        min_samples=min_samples,
        explanation=head + tail,
        interval=interval,
    )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def _duration_summary(values: Sequence[float]) -> dict:
    if not values:
        return {"n": 0, "p50": None, "p95": None}
    return {
        "n": len(values),
        "p50": _quantile(values, 0.5),
        "p95": _quantile(values, 0.95),
    }


def duration_compare(
    *,
    treatment: Sequence[float],
    control: Sequence[float],
    alpha: float = DEFAULT_ALPHA,
    min_samples: int = DEFAULT_MIN_SAMPLES["duration"],
    tolerance: float = 0.0,
) -> Comparison:
    """Compare durations with a one-sided Mann-Whitney U test.

    Fail when treatment durations are significantly larger (p < ``alpha``)
    and the treatment median exceeds the control median by more than
    ``tolerance`` (relative); pass otherwise; inconclusive when either
    cohort has fewer than ``min_samples`` durations.
    """
    test = "Mann-Whitney U (one-sided)"
    t_values = [float(v) for v in treatment if v is not None and not math.isnan(v)]
    c_values = [float(v) for v in control if v is not None and not math.isnan(v)]
    t_summary, c_summary = _duration_summary(t_values), _duration_summary(c_values)
    if len(t_values) < min_samples or len(c_values) < min_samples:
        return _short(
            "duration", test, t_summary, c_summary, min_samples, alpha, tolerance
        )
    if len(set(t_values) | set(c_values)) == 1:
        u_stat, p_value = len(t_values) * len(c_values) / 2, 1.0
    else:
        result = stats.mannwhitneyu(t_values, c_values, alternative="greater")
        u_stat, p_value = float(result.statistic), float(result.pvalue)
    rank_biserial = 2 * u_stat / (len(t_values) * len(c_values)) - 1
    t_median, c_median = t_summary["p50"], c_summary["p50"]
    if c_median:
        change = t_median / c_median - 1
    else:
        change = math.inf if t_median > 0 else 0.0
    significant = p_value < alpha
    material = change > tolerance
    verdict = FAIL if significant and material else PASS
    head = (
        f"Treatment median {t_median:.1f} ms (p95 {t_summary['p95']:.1f}, n={len(t_values)}) vs "
        f"control median {c_median:.1f} ms (p95 {c_summary['p95']:.1f}, n={len(c_values)}): "
        f"{change * 100:+.1f}%, rank-biserial {rank_biserial:+.2f}, p = {p_value:.3g}."
    )
    if verdict == FAIL:
        tail = (
            f" The treatment is slower with {(1 - p_value) * 100:.1f}% confidence and beyond "
            f"the {tolerance:.0%} tolerance: fail."
        )
    elif significant:
        tail = f" Significantly slower, but within the {tolerance:.0%} tolerance: pass."
    else:
        tail = f" No significant slowdown at alpha {alpha:g}: pass."
    return Comparison(
        metric="duration",
        verdict=verdict,
        test=test,
        treatment=t_summary,
        control=c_summary,
        effect=change,
        effect_size=rank_biserial,
        p_value=p_value,
        confidence=1 - p_value,
        alpha=alpha,
        tolerance=tolerance,
        min_samples=min_samples,
        explanation=head + tail,
    )


def cohort_compare(
    cohorts: Mapping[str, Mapping],
    *,
    metric: str = "error_rate",
    alpha: float = DEFAULT_ALPHA,
    min_samples: int | None = None,
    tolerance: float = 0.0,
) -> Comparison:
    """Compare the cohorts an ``outcomes`` measurement returns.

    ``cohorts`` is ``{"treatment": {...}, "control": {...}}`` where each
    cohort has ``n`` and ``failures`` (error rate) or ``durations`` (a list
    of milliseconds). ``metric`` is ``error_rate`` or ``duration`` (the
    ``outcomes`` metrics ``p50_ms`` and ``p95_ms`` compare durations).
    Raise ValueError for an unknown metric.
    """
    treatment = cohorts.get("treatment") or {}
    control = cohorts.get("control") or {}
    if metric == "error_rate":
        return error_rate_compare(
            treatment_failures=int(treatment.get("failures", 0)),
            treatment_n=int(treatment.get("n", 0)),
            control_failures=int(control.get("failures", 0)),
            control_n=int(control.get("n", 0)),
            alpha=alpha,
            min_samples=DEFAULT_MIN_SAMPLES["error_rate"]
            if min_samples is None
            else min_samples,
            tolerance=tolerance,
        )
    if metric in ("duration", "p50_ms", "p95_ms"):
        return duration_compare(
            treatment=treatment.get("durations") or [],
            control=control.get("durations") or [],
            alpha=alpha,
            min_samples=DEFAULT_MIN_SAMPLES["duration"]
            if min_samples is None
            else min_samples,
            tolerance=tolerance,
        )
    raise ValueError(f"unknown cohort metric {metric!r} (error_rate or duration)")


def relative_change(value: float, baseline: float) -> float | None:
    """Return how much worse ``value`` is than ``baseline`` (0.2 = 20% more),
    or None when the baseline is zero."""
    if baseline == 0:
        return None
    return value / baseline - 1


def summary(values: Sequence[float]) -> dict:
    """Return count, min, max, mean and last of a series of check values."""
    clean = [v for v in values if v is not None and not math.isnan(v)]
    if not clean:
        return {"count": 0, "min": None, "max": None, "mean": None, "last": None}
    return {
        "count": len(clean),
        "min": min(clean),
        "max": max(clean),
        "mean": statistics.fmean(clean),
        "last": clean[-1],
    }
