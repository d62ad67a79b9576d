"""A comparison's inputs: per-merchant windows, and each merchant's term.

Pure: the standard library only (a test enforces no Django import).
``canary.sequential.compare`` weighs these terms; this module says what
one merchant contributes: its difference between the current window and
its baseline (error-rate points, or the bias-corrected log ratio of a
latency quantile), its weight, and the sampling variance of each window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

_NORMAL = NormalDist()

ERROR_RATE = "error_rate"
QUANTILES: dict[str, float] = {"p50": 0.5, "p95": 0.95, "p99": 0.99}
METRICS = frozenset({ERROR_RATE, *QUANTILES})
# A merchant's quantile needs this many events in a window to count: small
# samples bias sample quantiles by an amount that differs between a short
# current window and a long baseline, which differencing would not remove.
MIN_QUANTILE_EVENTS: dict[str, int] = {"p50": 10, "p95": 30, "p99": 100}
# Spread of log latency assumed when a window has no p50 and p95 to
# estimate it from.
DEFAULT_LOG_SIGMA = 0.5


@dataclass(frozen=True, slots=True)
class Window:
    """One merchant's outcome events in one window."""

    events: int
    failures: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    # Current windows of compare checks: events above the merchant's
    # baseline quantile (canary.exceedance); None when not counted.
    p50_above: int | None = None
    p95_above: int | None = None
    p99_above: int | None = None


@dataclass(frozen=True, slots=True)
class MerchantAggregate:
    """One merchant's baseline (pre-rollout) and current windows."""

    merchant: str
    baseline: Window
    current: Window


def _log_sigma(window: Window) -> float:
    if window.p50_ms and window.p95_ms and window.p95_ms > window.p50_ms > 0:
        return math.log(window.p95_ms / window.p50_ms) / _NORMAL.inv_cdf(0.95)
    return DEFAULT_LOG_SIGMA


def _quantile_bias(q: float, n: int, sigma: float) -> float:
    """Return the expected log bias of the linear-interpolated sample
    ``q``-quantile of ``n`` log-normal values with log-spread ``sigma``.

    Position ``q (n - 1)`` between order statistics; each order statistic's
    expected normal score by Blom's approximation ``Phi^-1((i - 0.375) /
    (n + 0.25))`` (i 1-based): the bias is ``sigma`` times its distance
    from ``Phi^-1(q)``. Vanishes as ``n`` grows.
    """
    if n < 2:
        return 0.0
    position = q * (n - 1)
    low = math.floor(position)
    weight = position - low

    def score(index: int) -> float:  # 0-based order statistic
        return _NORMAL.inv_cdf((index + 1 - 0.375) / (n + 0.25))

    expected = (
        score(low)
        if weight == 0
        else ((1 - weight) * score(low) + weight * score(min(n - 1, low + 1)))
    )
    return sigma * (expected - _NORMAL.inv_cdf(q))


def _quantile_variance_factor(q: float) -> float:
    """Return ``Var(log q_hat) * n / sigma**2`` for a log-normal quantile."""
    return q * (1 - q) / _NORMAL.pdf(_NORMAL.inv_cdf(q)) ** 2


def _merchant_terms(
    metric: str, items: Sequence[MerchantAggregate]
) -> list[tuple[float, float, float, float, int]]:
    """Return (d_i, weight, current var, baseline var, events) per usable
    merchant; raise ValueError for impossible counts."""
    terms = []
    quantile = QUANTILES.get(metric)
    if quantile is not None:
        field, least = f"{metric}_ms", MIN_QUANTILE_EVENTS[metric]
        factor = _quantile_variance_factor(quantile)
    for item in items:
        base, cur = item.baseline, item.current
        if (
            base.events < 0
            or cur.events < 0
            or not 0 <= base.failures <= base.events
            or not 0 <= cur.failures <= cur.events
        ):
            raise ValueError(
                f"merchant {item.merchant}: failures must be within 0..events"
            )
        n_b, n_c = base.events, cur.events
        if quantile is None:
            if n_b == 0 or n_c == 0:
                continue
            # Half a pseudo-failure keeps a window without failures from
            # claiming zero variance.
            smooth_b = (base.failures + 0.5) / (n_b + 1)
            smooth_c = (cur.failures + 0.5) / (n_c + 1)
            var_b = smooth_b * (1 - smooth_b) / n_b
            var_c = smooth_c * (1 - smooth_c) / n_c
            diff = cur.failures / n_c - base.failures / n_b
            # Inverse-variance weight from the baseline's rate (fixed before
            # the phase) and the event counts: an error-prone merchant's
            # noisier difference counts less, and no weight depends on the
            # current window's outcomes.
            unit = smooth_b * (1 - smooth_b)
        else:
            value_b, value_c = getattr(base, field), getattr(cur, field)
            if (
                n_b < least
                or n_c < least
                or not value_b
                or not value_c
                or value_b <= 0
                or value_c <= 0
            ):
                continue
            var_b = factor * _log_sigma(base) ** 2 / n_b
            var_c = factor * _log_sigma(cur) ** 2 / n_c
            # Small-sample bias of an interpolated sample quantile (it reads
            # low: at 30 events a p95 by about 0.16 sigma in log terms),
            # removed per window so a short current window and a long
            # baseline compare like for like.
            diff = (
                math.log(value_c / value_b)
                - _quantile_bias(quantile, n_c, _log_sigma(cur))
                + _quantile_bias(quantile, n_b, _log_sigma(base))
            )
            unit = _log_sigma(base) ** 2
        terms.append((diff, n_c * n_b / (n_c + n_b) / unit, var_c, var_b, n_c))
    return terms
