"""Always-valid, merchant-level comparisons for canary decisions.

Pure: the standard library only (a test enforces no Django import), so the
controller, the preflight, the report and the simulator share one
computation.

A comparison takes per-merchant aggregates -- events, failures and latency
quantiles in a pre-rollout *baseline* window and in the *current* window --
for the treated merchants and the control merchants, and answers:

* ``worse``: the always-valid lower bound of ``d = treatment - comparison``
  (higher is worse) is above zero -- the treatment is worse, with the
  configured confidence -- and the estimate is above the margin ``m`` (a
  difference within the margin is tolerated even when it is certain);
* ``not_worse``: the always-valid upper bound is below ``m``
  (non-inferiority);
* ``not_yet``: neither.

Estimate. The merchant is the unit. Each merchant ``i`` gives its own
difference ``d_i = current_i - baseline_i`` (error rate points, or the log
ratio of a latency quantile), so a merchant that is simply more error-prone
or slower than the fleet compares only with itself. The treated mean minus
the control mean (difference in differences) removes the drift common to
both cohorts over the same time. Means are weighted by inverse variance,
``1 / (u_i (1/n_current + 1/n_baseline))`` with ``u_i`` the merchant's unit variance *from its
baseline* (``p(1-p)`` of its baseline error rate; the squared log-spread of
its baseline latencies): fixed before the phase, so no weight depends on
the current window's outcomes, and an error-prone merchant's noisier
difference counts less. With no live control (a 100% phase) the caller
passes the control cohort's last window, frozen; with no control at all
the estimate is the treated merchants' change against their own
baselines.

Variance. Over merchants (cluster-robust: the spread of the ``d_i``), never
over requests, floored by the within-merchant sampling variance (binomial
for error rates, the asymptotic variance of a log-normal quantile for
latencies) so that one or two merchants do not claim certainty. The
variance is split in two parts: the *current* part, which shrinks as the
phase collects events, and the *fixed* part (the baselines, and a frozen
control), which does not.

Guarantee. Each decision uses one side: the lower bound ``estimate -
(h_cs + h_fixed)`` for worse, the upper bound ``estimate + (h_cs +
h_fixed)`` for not worse. ``h_cs`` is the one-sided normal-mixture
confidence sequence of Howard et al. (2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences": the mixture over positive drifts) at
level ``0.8 * alpha`` in the information time ``1 / variance`` of the
current part, and ``h_fixed`` a one-sided fixed-sample bound at level
``0.2 * alpha`` for the fixed part. By Ville's inequality and a union
bound each bound holds *at every look simultaneously* with probability at
least ``1 - alpha`` (asymptotically: normal approximation of the
merchant-level estimate, variance plugged in, as in the asymptotic
confidence sequences of Waudby-Smith et al. 2021). So however often the
controller looks, ``P(worse ever) <= alpha`` when the true difference is
``<= 0``, and ``P(not_worse ever) <= alpha`` when it is ``>= m``. The
mixture is spread over precisions fixed by the margin alone (tightest
where the half-width is ``m``, ``2m``, ``4m``, ``8m``), never by the data.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

from canary import exceedance
from canary.confseq import (  # noqa: F401 - re-exported for callers and tests
    MIXTURE_SCALES,
    _best_ratio,
    cs_half_width,
    cs_one_sided,
    mixture_rhos,
)
from canary.windows import (  # noqa: F401 - the comparison's inputs, re-exported
    DEFAULT_LOG_SIGMA,
    ERROR_RATE,
    METRICS,
    MIN_QUANTILE_EVENTS,
    QUANTILES,
    MerchantAggregate,
    Window,
    _log_sigma,
    _merchant_terms,
    _quantile_variance_factor,
)

WORSE, NOT_WORSE, NOT_YET = "worse", "not_worse", "not_yet"

DEFAULT_ALPHA = 0.05
# Error rate: absolute points; latency quantiles: relative change.
DEFAULT_MARGINS: dict[str, float] = {
    ERROR_RATE: 0.01,
    "p50": 0.10,
    "p95": 0.10,
    "p99": 0.15,
}
# Share of alpha spent on the fixed part (baselines, a frozen control).
FIXED_SHARE = 0.2
# The recommended pre-rollout look-back: the baselines' noise never shrinks
# during a phase, so a look-back several times longer than the phases keeps
# that fixed part of the interval small.
DEFAULT_BASELINE_SECONDS = 6 * 3600
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class Comparison:
    """The answer of one comparison, with everything that explains it.

    ``estimate``, ``lower``, ``upper`` and ``margin`` are in the metric's
    unit: error rate points (0.01 = 1 pp) or the relative change of the
    quantile (0.1 = 10% slower). ``more_events`` estimates how many times
    the current events the comparison needs before it can say
    ``not_worse`` (1.0 when it already decided; None when no amount would:
    no data, or the estimate itself is past the margin), so ``as_dict`` is
    JSON without non-finite numbers.
    """

    metric: str
    decision: str
    rule: str
    estimate: float | None
    lower: float | None
    upper: float | None
    margin: float
    alpha: float
    treated_merchants: int
    control_merchants: int
    treated_events: int
    control_events: int
    drift_correction: str
    more_events: float | None
    explanation: str
    # Quantile metrics with exceedance counts: the worse side's evidence
    # (shares above the baseline quantiles, their difference and bound).
    exceedance: dict | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class _Group:
    estimate: float
    total_variance: float
    current_variance: float
    fixed_variance: float
    merchants: int
    events: int


def _group(metric: str, items: Sequence[MerchantAggregate]) -> _Group | None:
    return _group_of(_merchant_terms(metric, items))


def _group_of(terms: list[tuple[float, float, float, float, int]]) -> _Group | None:
    """Return the weighted estimate and its variance parts of the terms."""
    if not terms:
        return None
    total_weight = estimate_sum = model_current = model_fixed = 0.0
    events = 0
    for diff, weight, var_c, var_b, n_c in terms:
        total_weight += weight
        estimate_sum += weight * diff
        model_current += weight * weight * var_c
        model_fixed += weight * weight * var_b
        events += n_c
    estimate = estimate_sum / total_weight
    squared = total_weight * total_weight
    model_current /= squared
    model_fixed /= squared
    count = len(terms)
    robust = 0.0
    if count > 1:
        # Cluster-robust (sandwich) variance of a weighted mean, with the
        # small-sample factor n / (n - 1).
        for diff, weight, _, _, _ in terms:
            robust += (weight * (diff - estimate)) ** 2
        robust = robust / squared * count / (count - 1)
    total = max(robust, model_current + model_fixed)
    current = max(total - model_fixed, model_current)
    return _Group(
        estimate=estimate,
        total_variance=current + model_fixed,
        current_variance=current,
        fixed_variance=model_fixed,
        merchants=count,
        events=events,
    )


def _to_unit(metric: str, value: float) -> float:
    return value if metric == ERROR_RATE else math.expm1(value)


def _fmt(metric: str, value: float) -> str:
    if metric == ERROR_RATE:
        return f"{value * 100:+.2f} pp"
    return f"{value * 100:+.1f}%"


def compare(
    *,
    metric: str,
    treated: Sequence[MerchantAggregate],
    control: Sequence[MerchantAggregate] = (),
    control_is_frozen: bool = False,
    margin: float | None = None,
    alpha: float = DEFAULT_ALPHA,
) -> Comparison:
    """Compare the treated merchants with their baselines and the control.

    ``metric`` is ``error_rate`` (margin in absolute points, default +0.5
    pp) or ``p50``/``p95``/``p99`` (margin relative, default +10%/+10%/
    +15%). ``control_is_frozen`` says the control aggregates are the
    control's last window before a 100% phase: their whole variance is
    fixed. The decision holds at every look with the guarantee in the
    module docstring. Raise ValueError for an unknown metric, a margin that
    is not positive, alpha outside (0, 1) or impossible counts.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} ({', '.join(sorted(METRICS))})")
    margin = DEFAULT_MARGINS[metric] if margin is None else float(margin)
    if not math.isfinite(margin) or margin <= 0:
        raise ValueError("margin must be a positive number")
    if not 0 < alpha < 1:
        raise ValueError("alpha must be within (0, 1)")
    scale_margin = margin if metric == ERROR_RATE else math.log1p(margin)
    treated_group = _group(metric, treated)
    control_group = _group(metric, control)
    control_merchants = control_group.merchants if control_group else 0
    control_events = control_group.events if control_group else 0
    if treated_group is None:
        return Comparison(
            metric=metric,
            decision=NOT_YET,
            rule="no_data",
            estimate=None,
            lower=None,
            upper=None,
            margin=margin,
            alpha=alpha,
            treated_merchants=0,
            control_merchants=control_merchants,
            treated_events=0,
            control_events=control_events,
            drift_correction="none",
            more_events=None,
            explanation=(
                f"{metric}: no treated merchant has events in both its baseline "
                "and the current window yet: not yet (missing data never promotes)."
            ),
        )
    estimate, drift, half_cs, half_fixed = _bounds(
        treated_group, control_group, control_is_frozen, scale_margin, alpha
    )
    half = half_cs + half_fixed
    lower, upper = estimate - half, estimate + half
    evidence = None
    if metric in QUANTILES:
        evidence = _exceedance(
            metric, treated, control, control_is_frozen, scale_margin, alpha
        )
    if evidence is not None:
        # The worse side decides on the counts above the baseline quantiles
        # (a direct, distribution-free test); the reported lower bound is
        # theirs, turned into a slowdown.
        lower = evidence.pop("lower_shift")
        worse_rule = "exceedance_lower_bound_above_zero_estimate_above_margin"
        is_worse = evidence["lower"] > 0
    else:
        worse_rule = "lower_bound_above_zero_estimate_above_margin"
        is_worse = lower > 0
    if is_worse and estimate > scale_margin:
        decision, rule = WORSE, worse_rule
    elif upper < scale_margin:
        decision, rule = NOT_WORSE, "upper_bound_below_margin"
    else:
        decision, rule = NOT_YET, "interval_contains_margin"
    more: float | None = 1.0
    if decision == NOT_YET:
        room = scale_margin - estimate - half_fixed
        # Half-width shrinks roughly as 1/sqrt(events): the factor of events
        # the current part needs before the upper bound drops below m.
        more = (half_cs / room) ** 2 if room > 0 and half_cs > 0 else None
    level = f"{(1 - alpha) * 100:g}%"
    text = (
        f"{metric}: treated {_fmt(metric, _to_unit(metric, estimate))} against "
        f"{'their baselines' if drift == 'none' else 'their baselines, corrected by the ' + drift}"
        f" ({level} always-valid bounds {_fmt(metric, _to_unit(metric, lower))} to "
        f"{_fmt(metric, _to_unit(metric, upper))}, margin {_fmt(metric, margin)}; "
        f"{treated_group.merchants} treated merchants / {treated_group.events} events, "
        f"{control_merchants} control / {control_events}): "
    )
    if decision == WORSE and evidence is not None:
        text += (
            f"{exceedance.describe(evidence)}, and the estimate above the "
            "margin: worse."
        )
    elif decision == WORSE:
        text += (
            "the lower bound is above zero and the estimate above the margin: worse."
        )
    elif decision == NOT_WORSE:
        text += "the upper bound is below the margin: not worse."
    elif more is None:
        text += "the interval contains the margin: not yet."
    else:
        text += (
            f"the interval contains the margin: not yet (about {more:.1f}x the "
            "current events needed to show not worse)."
        )
    return Comparison(
        metric=metric,
        decision=decision,
        rule=rule,
        estimate=_to_unit(metric, estimate),
        lower=_to_unit(metric, lower),
        upper=_to_unit(metric, upper),
        margin=margin,
        alpha=alpha,
        treated_merchants=treated_group.merchants,
        control_merchants=control_merchants,
        treated_events=treated_group.events,
        control_events=control_events,
        drift_correction=drift,
        more_events=more,
        explanation=text,
        exceedance=evidence,
    )


def _bounds(
    treated: _Group,
    control: _Group | None,
    control_is_frozen: bool,
    scale_margin: float,
    alpha: float,
) -> tuple[float, str, float, float]:
    """Return the difference in differences, the drift correction used and
    the two parts of the one-sided half-width (confidence sequence over the
    current part, fixed-sample bound over the fixed part)."""
    estimate = treated.estimate
    current_var, fixed_var = treated.current_variance, treated.fixed_variance
    if control is None:
        drift = "none"
    elif control_is_frozen:
        drift = "control's last window"
        estimate -= control.estimate
        fixed_var += control.total_variance
    else:
        drift = "control cohort"
        estimate -= control.estimate
        current_var += control.current_variance
        fixed_var += control.fixed_variance
    cs_alpha, fixed_alpha = alpha * (1 - FIXED_SHARE), alpha * FIXED_SHARE
    half_cs = cs_one_sided(current_var, mixture_rhos(scale_margin, cs_alpha), cs_alpha)
    half_fixed = _NORMAL.inv_cdf(1 - fixed_alpha) * math.sqrt(fixed_var)
    return estimate, drift, half_cs, half_fixed


def _exceedance(
    metric: str,
    treated: Sequence[MerchantAggregate],
    control: Sequence[MerchantAggregate],
    control_is_frozen: bool,
    scale_margin: float,
    alpha: float,
) -> dict | None:
    """Return the exceedance evidence of a quantile metric, or None when the
    windows carry no counts (then the quantile estimate decides both
    sides), or too few events expected above the thresholds yet
    (``exceedance.MIN_EXPECTED_ABOVE``). Same guarantee as the quantile
    bounds: one side, always valid."""
    if not exceedance.has_counts(metric, treated):
        return None
    q = QUANTILES[metric]
    if exceedance.expected_above(metric, q, treated) < exceedance.MIN_EXPECTED_ABOVE:
        return None
    treated_group = _group_of(exceedance.exceedance_terms(metric, q, treated))
    if treated_group is None:
        return None
    control_group = None
    if control:
        if not exceedance.has_counts(metric, control):
            return None
        control_group = _group_of(exceedance.exceedance_terms(metric, q, control))
    sigma = exceedance.log_spread(treated, _log_sigma)
    rate_margin = exceedance.rate_margin(q, scale_margin, sigma)
    estimate, _, half_cs, half_fixed = _bounds(
        treated_group, control_group, control_is_frozen, rate_margin, alpha
    )
    lower = estimate - half_cs - half_fixed
    return {
        "quantile": metric,
        "expected_share": 1 - q,
        "estimate": estimate,
        "lower": lower,
        "rate_margin": rate_margin,
        "log_spread": sigma,
        "treated_merchants": treated_group.merchants,
        "treated_events": treated_group.events,
        "lower_shift": exceedance.rate_to_log_shift(q, lower, sigma),
    }
