"""Normal-mixture confidence sequences (Howard et al. 2021): the
time-uniform boundaries ``canary.sequential`` decides with.

Pure: the standard library only (a test enforces no Django import). For an
estimate whose error behaves like ``S / I`` with ``S`` a martingale of
variance ``I = 1 / variance``, ``cs_half_width`` is the two-sided and
``cs_one_sided`` the one-sided half-width that holds at every look at once
with probability at least ``1 - alpha`` (Ville's inequality on the mixture
martingale); ``mixture_rhos`` gives the mixture's precisions from the
margin alone.
"""

from __future__ import annotations

import math
from functools import lru_cache
from statistics import NormalDist

_NORMAL = NormalDist()

# The mixture is spread over precisions tuned to half-widths of m, 2m, 4m
# and 8m (equal weights): an average of martingales is a martingale, so the
# guarantee holds, and the boundary stays near its best both at the margin
# (where ``not_worse`` is decided) and well above it (a large regression
# on little traffic). Each extra scale costs width at the margin (the
# boundary pays ``log(scales)``): four give about 4% over a single
# precision, six about 10%.
MIXTURE_SCALES = (1, 2, 4, 8)


@lru_cache(maxsize=64)
def _best_ratio(alpha: float) -> tuple[float, float]:
    """Return ``(r, f(r))`` minimising ``f(r) = (1+r) log((1+r)/(r a^2))``.

    With ``rho = r * I`` one normal mixture is tightest at information
    ``I``; its half-width there is ``sqrt(f(r) / I)``.
    """
    log_term = math.log(1 / alpha**2)
    low, high = 1e-6, 10.0
    for _ in range(100):  # f'(r) = log(1 + 1/r) + log_term - 1/r, increasing
        mid = (low + high) / 2
        if math.log1p(1 / mid) + log_term - 1 / mid < 0:
            low = mid
        else:
            high = mid
    ratio = (low + high) / 2
    return ratio, (1 + ratio) * math.log((1 + ratio) / (ratio * alpha**2))


@lru_cache(maxsize=256)
def mixture_rhos(margin: float, alpha: float) -> tuple[float, ...]:
    """Return the normal-mixture precisions for a check with this margin.

    One per scale in ``MIXTURE_SCALES``: the precision whose boundary is
    tightest where the half-width is ``scale * margin``. They depend on the
    margin and alpha only, never on data, which the time-uniform guarantee
    needs.
    """
    ratio, f_value = _best_ratio(alpha)
    return tuple(ratio * f_value / (scale * margin) ** 2 for scale in MIXTURE_SCALES)


def _log_mixture(
    square: float, information: float, rhos: tuple[float, ...]
) -> tuple[float, float]:
    """Return the log of the equal-weight mixture martingale at ``S**2``
    and its derivative in ``S**2``."""
    logs = [
        0.5 * math.log(rho / (information + rho)) + square / (2 * (information + rho))
        for rho in rhos
    ]
    top = max(logs)
    weights = [math.exp(v - top) for v in logs]
    total = sum(weights)
    slope = sum(
        w / (2 * (information + rho)) for w, rho in zip(weights, rhos, strict=True)
    )
    return top + math.log(total / len(logs)), slope / total


def cs_half_width(variance: float, rhos: tuple[float, ...], alpha: float) -> float:
    """Return the two-sided normal-mixture confidence-sequence half-width.

    For an estimate whose error behaves like ``S / I`` with ``S`` a
    martingale of variance ``I = 1 / variance``: ``P(exists look: |error| >
    half-width) <= alpha`` (Howard et al. 2021, the normal mixture, here
    mixed over ``rhos``; Ville's inequality on the mixture martingale).
    """
    if variance <= 0:
        return 0.0
    information = 1 / variance
    target = math.log(1 / alpha)
    # Any one term reaching 1/alpha (weighted) bounds S**2 from above.
    high = min(
        2
        * (information + rho)
        * (target + math.log(len(rhos)) + 0.5 * math.log((information + rho) / rho))
        for rho in rhos
    )
    # The log-mixture is convex and increasing in S**2: Newton's method
    # started above the root descends to it monotonically.
    for _ in range(50):
        value, slope = _log_mixture(high, information, rhos)
        step = (value - target) / slope
        high -= step
        if step <= 1e-9 * high:
            break
    return math.sqrt(high) / information


def _log_one_sided(
    square_root: float, information: float, rhos: tuple[float, ...]
) -> float:
    """Return the log of the equal-weight half-normal mixture martingale at
    ``S`` (``S > 0``): ``mean_k 2 Phi(S / sqrt(I + rho_k)) sqrt(rho_k / (I
    + rho_k)) exp(S**2 / (2 (I + rho_k)))`` (the normal mixture over
    positive drifts only; Howard et al. 2021, one-sided)."""
    logs = [
        math.log(2 * _NORMAL.cdf(square_root / math.sqrt(information + rho)))
        + 0.5 * math.log(rho / (information + rho))
        + square_root * square_root / (2 * (information + rho))
        for rho in rhos
    ]
    top = max(logs)
    return top + math.log(sum(math.exp(v - top) for v in logs) / len(logs))


def cs_one_sided(variance: float, rhos: tuple[float, ...], alpha: float) -> float:
    """Return the one-sided confidence-sequence half-width: for an error
    ``S / I`` as in ``cs_half_width``, ``P(exists look: error > width) <=
    alpha`` (Ville's inequality on the half-normal mixture martingale).
    Narrower than the two-sided width at ``alpha``: each decision
    (worse, not worse) needs one side only."""
    if variance <= 0:
        return 0.0
    information = 1 / variance
    target = math.log(1 / alpha)
    low, high = 0.0, cs_half_width(variance, rhos, alpha) * information
    # The two-sided boundary at alpha bounds it from above; the log-mixture
    # increases in S: bisect.
    for _ in range(60):
        mid = (low + high) / 2
        if _log_one_sided(mid, information, rhos) < target:
            low = mid
        else:
            high = mid
        if high - low <= 1e-9 * high:
            break
    return high / information
