"""Exceedance counts: the direct test of "this latency quantile went up".

Pure: the standard library only (a test enforces no Django import).

A merchant's baseline ``q``-quantile ``t`` is a threshold. If the merchant's
current ``q``-quantile is not above ``t``, at most a share ``1 - q`` of its
current events take longer than ``t`` -- whatever the shape of its latency
distribution. So the count of current events above the baseline quantile is
a binomial test of "the quantile went up" with a known null rate: no
log-normal assumption, no small-sample bias of a sample quantile, and far
more power on a large slowdown than the difference of two sample quantiles
(at +30% on a log-spread of 0.5 it needs under half the events).

The threshold is itself a sample quantile of ``n_b`` baseline events: the
share of the merchant's latencies above it is random, with mean
``((1 - q) n_b + q) / (n_b + 1)`` (the expected exceedance of the
linear-interpolated order statistic, so a 30-event baseline's p95 is
exceeded by 7.9% of events, not 5%) and variance ``p0 (1 - p0) / (n_b +
2)`` (a beta variable): that null rate and its variance are the baseline's
part, fixed before the phase.

``canary.sequential.compare`` uses these terms for the *worse* side of a
quantile metric when the windows carry the counts; the *not worse* side
stays with the quantile estimate, which says how much slower, not only
whether.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist, median
from typing import Protocol

_NORMAL = NormalDist()
# A baseline quantile from fewer events is too rough a threshold.
MIN_BASELINE_EVENTS: dict[str, int] = {"p50": 10, "p95": 30, "p99": 100}
# The counts decide only once the treated merchants expect this many events
# above their thresholds: below it the normal approximation of a binomial
# with a small rate understates its upper tail (47 events expecting 2.4
# above a p95 are too few), and the quantile difference decides instead.
MIN_EXPECTED_ABOVE = 10.0


class _Window(Protocol):
    events: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    p50_above: int | None
    p95_above: int | None
    p99_above: int | None


class _Item(Protocol):
    merchant: str
    baseline: _Window
    current: _Window


def null_rate(q: float, n_baseline: int) -> float:
    """Return the expected share of events above a baseline sample
    ``q``-quantile of ``n_baseline`` events (linear interpolation)."""
    return ((1 - q) * n_baseline + q) / (n_baseline + 1)


def has_counts(metric: str, items: Sequence[_Item]) -> bool:
    """Whether the current windows carry exceedance counts for ``metric``."""
    field = f"{metric}_above"
    return any(getattr(item.current, field, None) is not None for item in items)


def _usable(metric: str, q: float, items: Sequence[_Item]):
    """Yield ``(count above, current events, baseline events, p0)`` of the
    merchants with a usable baseline quantile and current events."""
    value_field, count_field = f"{metric}_ms", f"{metric}_above"
    least = MIN_BASELINE_EVENTS[metric]
    for item in items:
        base, cur = item.baseline, item.current
        above = getattr(cur, count_field, None)
        threshold = getattr(base, value_field, None)
        if above is None:
            continue
        if not 0 <= above <= cur.events:
            raise ValueError(
                f"merchant {item.merchant}: {count_field} must be within 0..events"
            )
        if base.events < least or not threshold or threshold <= 0 or cur.events < 1:
            continue
        yield above, cur.events, base.events, null_rate(q, base.events)


def expected_above(metric: str, q: float, items: Sequence[_Item]) -> float:
    """Return how many current events above their thresholds the usable
    merchants expect when nothing changed."""
    return sum(n_c * p0 for _, n_c, _, p0 in _usable(metric, q, items))


def exceedance_terms(
    metric: str, q: float, items: Sequence[_Item]
) -> list[tuple[float, float, float, float, int]]:
    """Return ``(d_i, weight, current var, baseline var, events)`` per
    merchant with a usable baseline quantile and current events: ``d_i`` is
    the share of current events above the baseline quantile minus the null
    rate, the variances those of a binomial share and of the threshold's
    true exceedance, the weight their inverse (by the counts only).

    Raise ValueError for a count outside 0..events.
    """
    terms = []
    for above, n_c, n_b, p0 in _usable(metric, q, items):
        unit = p0 * (1 - p0)
        # The null's variance, not the observed share's: under "not above"
        # every merchant's share is at most p0 < 1/2, so p0 (1 - p0) bounds
        # its variance, and a rising share does not widen its own bound.
        var_c = unit / n_c
        var_b = unit / (n_b + 2)
        terms.append((above / n_c - p0, 1 / (var_c + var_b), var_c, var_b, n_c))
    return terms


def log_spread(items: Sequence[_Item], log_sigma) -> float:
    """Return the median baseline log-spread of the merchants (the scale
    that turns a rate difference into a slowdown for display)."""
    spreads = [log_sigma(item.baseline) for item in items]
    return median(spreads) if spreads else 0.5


def rate_margin(q: float, scale_margin: float, sigma: float) -> float:
    """Return the exceedance-rate rise a slowdown of ``scale_margin`` (log)
    causes for a log-normal with spread ``sigma``: where the mixture of the
    confidence sequence is tuned (fixed by the margin and the baselines)."""
    z = _NORMAL.inv_cdf(q)
    return max(1e-4, (1 - _NORMAL.cdf(z - scale_margin / sigma)) - (1 - q))


def rate_to_log_shift(q: float, rate_difference: float, sigma: float) -> float:
    """Return the log slowdown that raises the share above the ``q``-
    quantile by ``rate_difference`` for a log-normal with spread ``sigma``
    (the inverse of ``rate_margin``; clamped to shares within (0, 1))."""
    share = min(1 - 1e-9, max(1e-9, (1 - q) + rate_difference))
    return sigma * (_NORMAL.inv_cdf(q) - _NORMAL.inv_cdf(1 - share))


def describe(evidence: dict) -> str:
    """Return the worse side's evidence in words."""
    return (
        f"the share of treated events above their baseline {evidence['quantile']} "
        f"is {evidence['estimate'] * 100:+.2f} pp over the expected "
        f"{evidence['expected_share'] * 100:g}% (always-valid lower bound "
        f"{evidence['lower'] * 100:+.2f} pp, above zero)"
    )
