"""The simulated fleet and regression kinds of bench/decisions.py, and n*."""

from __future__ import annotations

import datetime as dt
import math
import statistics
from dataclasses import dataclass

import numpy as np

TEMPLATE = "pilot-10-50-100"
ENVIRONMENT = "bench-decisions"
FLEET_SIZE = 100
RATE_RANGE = (5.0, 50.0)  # requests/s per merchant
BASE_ERROR = 0.01
ERROR_PRONE_SHARE = 0.2
ERROR_PRONE_FACTOR = 5.0
MEDIAN_MS = 120.0
MERCHANT_LATENCY_SIGMA = 0.35  # spread of merchants' medians (log scale)
REQUEST_LATENCY_SIGMA = 0.5  # spread of one merchant's requests (log scale)
DRIFT_AMPLITUDE = 0.10
DRIFT_PERIOD = 6 * 3600.0
ALPHA = 0.05
POWER = 0.80
BEAT_SECONDS = 2.0  # CANARY_TICK_SECONDS: the beat a due time is rounded up to
LOOKBACK_SECONDS = 6 * 3600.0  # fleet traffic before start: the baselines
START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
MAX_BATCH = 5000
DEFAULT_REPORT_FRACTION = 0.005

# The checks: None = the default check set of docs/canary.md
# (canary.templates_data.DEFAULT_CHECKS: error rate and p95 latency of the
# outcome events, compared with each merchant's own baseline). The
# baseline look-back is the product's default, CANARY_BASELINE_SECONDS.
CHECKS: list[dict] | None = None


@dataclass(frozen=True)
class Kind:
    """A simulated canary's treatment effect."""

    name: str
    error_delta: float = 0.0  # added to the treated requests' failure rate
    latency_factor: float = 1.0  # multiplies the treated requests' latency
    above_share: float | None = None  # only once the served share exceeds it

    @property
    def is_healthy(self) -> bool:
        return self.error_delta == 0 and self.latency_factor == 1.0

    def is_active(self, served_share: float) -> bool:
        return not self.is_healthy and (
            self.above_share is None or served_share > self.above_share
        )


KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        Kind("healthy"),
        Kind("errors+2pp", error_delta=0.02),
        Kind("p95+30%", latency_factor=1.3),
        Kind("late-errors+2pp", error_delta=0.02, above_share=0.5),
        Kind("gross-errors+30pp", error_delta=0.30),
    )
}
DEFAULT_KINDS = ("healthy", "errors+2pp", "p95+30%", "late-errors+2pp")


@dataclass(frozen=True)
class Fleet:
    """The merchants: keys, request rates, error rates, latency medians."""

    keys: tuple[str, ...]
    rates: np.ndarray
    errors: np.ndarray
    log_medians: np.ndarray

    @classmethod
    def build(cls, seed: int, size: int = FLEET_SIZE) -> Fleet:
        rng = np.random.default_rng(seed)
        prone = rng.permutation(size) < round(size * ERROR_PRONE_SHARE)
        return cls(
            keys=tuple(f"bench-m-{i:03d}" for i in range(size)),
            rates=rng.uniform(*RATE_RANGE, size),
            errors=np.where(prone, BASE_ERROR * ERROR_PRONE_FACTOR, BASE_ERROR),
            log_medians=math.log(MEDIAN_MS)
            + rng.normal(0.0, MERCHANT_LATENCY_SIGMA, size),
        )

    @property
    def weighted_error(self) -> float:
        return float(np.average(self.errors, weights=self.rates))

    def latency_cdf(self, x: float) -> float:
        """Return the traffic-weighted share of requests faster than ``x`` ms."""
        z = (math.log(x) - self.log_medians) / REQUEST_LATENCY_SIGMA
        cdf = np.array([statistics.NormalDist().cdf(v) for v in z])
        return float(np.average(cdf, weights=self.rates))

    def latency_quantile(self, q: float) -> float:
        low, high = 1.0, 100_000.0
        for _ in range(80):
            mid = math.sqrt(low * high)
            low, high = (mid, high) if self.latency_cdf(mid) < q else (low, mid)
        return math.sqrt(low * high)


def n_star(p0: float, p1: float, alpha: float = ALPHA, power: float = POWER) -> int:
    """Return the treated events (per arm) a fixed-sample one-sided
    two-proportion z-test at ``alpha`` needs to see ``p1 > p0`` with
    ``power``."""
    normal = statistics.NormalDist()
    z_a, z_b = normal.inv_cdf(1 - alpha), normal.inv_cdf(power)
    mean = (p0 + p1) / 2
    numerator = z_a * math.sqrt(2 * mean * (1 - mean)) + z_b * math.sqrt(
        p0 * (1 - p0) + p1 * (1 - p1)
    )
    return math.ceil(numerator**2 / (p1 - p0) ** 2)


def kind_n_star(kind: Kind, fleet: Fleet) -> int | None:
    """Return n* of ``kind`` at the fleet's traffic mix (None: healthy)."""
    if kind.is_healthy:
        return None
    if kind.error_delta:
        p0 = fleet.weighted_error
        return n_star(p0, min(1.0, p0 + kind.error_delta))
    # p95 +30%: the share of requests slower than the fleet's p95.
    p95 = fleet.latency_quantile(0.95)
    return n_star(0.05, 1.0 - fleet.latency_cdf(p95 / kind.latency_factor))


@dataclass
class CanaryResult:
    """How one simulated canary ended, and when (simulated seconds)."""

    kind: str
    run: int
    pilot: str
    pilot_error_prone: bool
    outcome: str  # rolled_back | paused | completed | running
    phase: int  # the phase it ended in
    check: str  # the check that decided a rollback or pause ("" otherwise)
    ended_after: float  # seconds from start to the end (decision)
    onset_after: float | None  # seconds from start to the regression onset
    delay_seconds: float | None = None
    delay_events: int | None = None
    delay_intervals: int | None = None
    n_star_seconds: float | None = None  # from onset to n* treated events
    treated_events: int = 0
    events: int = 0
    wall_seconds: float = 0.0
