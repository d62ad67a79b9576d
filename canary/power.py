"""How small a regression a compare check can catch: the preflight's
minimum detectable effect.

Pure: the standard library only (a test enforces no Django import). The
same bounds as ``canary.sequential.compare``: for the error rate the
merchant-weighted difference of rates; for a latency quantile the worse
side's exceedance counts (``canary.exceedance``) together with the
quantile estimate that must clear the margin.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from canary import exceedance
from canary.confseq import cs_one_sided, mixture_rhos
from canary.sequential import (
    DEFAULT_ALPHA,
    DEFAULT_BASELINE_SECONDS,
    DEFAULT_LOG_SIGMA,
    DEFAULT_MARGINS,
    ERROR_RATE,
    FIXED_SHARE,
    METRICS,
    QUANTILES,
    _quantile_variance_factor,
    _to_unit,
)

_NORMAL = NormalDist()


def minimum_detectable_effect(
    *,
    metric: str,
    treated_merchants: int,
    control_merchants: int,
    events_per_merchant_per_minute: float,
    phase_seconds: float,
    baseline_seconds: float = DEFAULT_BASELINE_SECONDS,
    baseline_rate: float = 0.01,
    heavy_share: float = 0.0,
    heavy_factor: float = 1.0,
    log_sigma: float = DEFAULT_LOG_SIGMA,
    margin: float | None = None,
    alpha: float = DEFAULT_ALPHA,
    power: float = 0.8,
) -> float:
    """Return the smallest regression ``compare`` says ``worse`` to by the
    phase's end with probability ``power``.

    Error rate: absolute points added to every merchant's rate; quantiles:
    the relative slowdown. ``heavy_share`` of the merchants have
    ``heavy_factor`` times ``baseline_rate`` (the heterogeneity that
    differencing removes from the estimate but not from the noise). Traffic
    is taken as equal per merchant, and only the last look counts (earlier
    looks only add chances), so the figure errs on the large side. Raise
    ValueError for an unknown metric or a phase without treated traffic.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}")
    if treated_merchants < 1 or events_per_merchant_per_minute <= 0:
        raise ValueError("a phase needs treated merchants with traffic")
    if phase_seconds <= 0 or baseline_seconds <= 0:
        raise ValueError("durations must be positive")
    margin = DEFAULT_MARGINS[metric] if margin is None else margin
    scale_margin = margin if metric == ERROR_RATE else math.log1p(margin)
    cur_n = events_per_merchant_per_minute * phase_seconds / 60
    base_n = events_per_merchant_per_minute * baseline_seconds / 60
    cs_alpha = alpha * (1 - FIXED_SHARE)
    z_fixed = _NORMAL.inv_cdf(1 - alpha * FIXED_SHARE)
    z_power = _NORMAL.inv_cdf(power)
    if metric in QUANTILES:
        return _quantile_mde(
            metric,
            treated_merchants=treated_merchants,
            control_merchants=control_merchants,
            cur_n=cur_n,
            base_n=base_n,
            log_sigma=log_sigma,
            scale_margin=scale_margin,
            alpha=alpha,
            z_power=z_power,
        )
    rhos = mixture_rhos(scale_margin, cs_alpha)

    def group_variances(effect: float) -> tuple[float, float, float]:
        """Return the treated group's (current, baseline) variance and the
        control group's current variance per merchant, with the
        inverse-variance weights ``compare`` uses (by the baseline rate)."""
        if metric == ERROR_RATE:
            kinds = [(1 - heavy_share, baseline_rate)]
            if heavy_share:
                kinds.append((heavy_share, min(0.5, baseline_rate * heavy_factor)))
            weights = [(s, 1 / (p * (1 - p))) for s, p in kinds]
            total = sum(s * w for s, w in weights)

            def mix(variance_of) -> float:
                return sum(
                    s * w * w * variance_of(p)
                    for (s, w), (_, p) in zip(weights, kinds, strict=True)
                ) / (total * total)

            var_b = mix(lambda p: p * (1 - p)) / base_n
            var_c = (
                mix(lambda p: min(1.0, p + effect) * (1 - min(1.0, p + effect))) / cur_n
            )
            var_c0 = mix(lambda p: p * (1 - p)) / cur_n
            return var_c, var_b, var_c0

    effect = scale_margin
    for _ in range(30):  # the variance depends (a little) on the effect
        var_c, var_b, var_c0 = group_variances(effect)
        current = var_c / treated_merchants
        fixed = var_b / treated_merchants
        if control_merchants:
            current += var_c0 / control_merchants
            fixed += var_b / control_merchants
        half = cs_one_sided(current, rhos, cs_alpha) + z_fixed * math.sqrt(fixed)
        # Worse needs the lower bound above zero and the estimate above the
        # margin: reached with ``power`` when the effect clears the larger
        # of the two by z_power standard errors.
        updated = max(half, scale_margin) + z_power * math.sqrt(current + fixed)
        if math.isclose(updated, effect, rel_tol=1e-6):
            break
        effect = updated
    return _to_unit(metric, effect)


def _quantile_mde(
    metric: str,
    *,
    treated_merchants: int,
    control_merchants: int,
    cur_n: float,
    base_n: float,
    log_sigma: float,
    scale_margin: float,
    alpha: float,
    z_power: float,
) -> float:
    """Return the smallest slowdown both parts of *worse* reach with
    ``power``: the exceedance lower bound above zero, and the quantile
    estimate above the margin (bisection over the log slowdown)."""
    q = QUANTILES[metric]
    cs_alpha = alpha * (1 - FIXED_SHARE)
    z_fixed = _NORMAL.inv_cdf(1 - alpha * FIXED_SHARE)
    p0 = exceedance.null_rate(q, max(1, round(base_n)))
    rate_margin = exceedance.rate_margin(q, scale_margin, log_sigma)
    rhos = mixture_rhos(rate_margin, cs_alpha)
    controls = control_merchants or math.inf
    # The bound uses the null's variance; the estimate's spread is the
    # alternative's.
    bound_current = p0 * (1 - p0) / cur_n * (1 / treated_merchants + 1 / controls)
    bound_fixed = p0 * (1 - p0) / base_n * (1 / treated_merchants + 1 / controls)
    half = cs_one_sided(bound_current, rhos, cs_alpha) + z_fixed * math.sqrt(
        bound_fixed
    )
    factor = _quantile_variance_factor(q) * log_sigma**2
    quantile_sd = math.sqrt(
        factor * (1 / cur_n + 1 / base_n) * (1 / treated_merchants + 1 / controls)
    )

    def detected(shift: float) -> bool:
        p1 = 1 - _NORMAL.cdf(_NORMAL.inv_cdf(q) - shift / log_sigma)
        spread = math.sqrt(
            (p1 * (1 - p1) / cur_n + p0 * (1 - p0) / base_n) / treated_merchants
            + p0 * (1 - p0) * (1 / cur_n + 1 / base_n) / controls
        )
        return (
            p1 - p0 >= half + z_power * spread
            and shift >= scale_margin + z_power * quantile_sd
        )

    low, high = 0.0, 10.0
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (low, middle) if detected(middle) else (middle, high)
    return _to_unit(metric, high)
