"""Prometheus metrics of the flags app (exposed on /metrics).

Label children are bound once and kept in a dict, so counting an evaluation
is a dict lookup and an increment.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

EVALUATIONS = Counter(
    "controlplane_flags_evaluations_total",
    "Flag evaluations served, by flag, variation and reason.",
    ["flag", "variation", "reason"],
)
EVALUATION_SECONDS = Histogram(
    "controlplane_flags_evaluation_seconds",
    "Time to evaluate the flags of one request (engine only).",
    buckets=(
        0.00001,
        0.000025,
        0.00005,
        0.0001,
        0.00025,
        0.0005,
        0.001,
        0.0025,
        0.005,
        0.01,
        0.05,
    ),
)
RULESET_LOADS = Counter(
    "controlplane_flags_ruleset_loads_total",
    "Rulesets compiled into memory (cold loads and version changes).",
    ["environment"],
)

_children: dict[tuple[str, str, str], object] = {}
_MAX_CHILDREN = 50_000
_observe = EVALUATION_SECONDS.observe


def evaluation_counted(flag: str, variation: str | None, reason: str) -> None:
    """Count one answer."""
    key = (flag, variation or "", reason)
    child = _children.get(key)
    if child is None:
        if reason == "ERROR" and len(_children) >= _MAX_CHILDREN:
            return  # unknown flag keys from callers must not grow memory forever
        child = _children[key] = EVALUATIONS.labels(*key)
    child.inc()


def evaluation_timed(seconds: float) -> None:
    """Record the engine time of one request."""
    _observe(seconds)


def ruleset_loaded(environment: str) -> None:
    RULESET_LOADS.labels(environment).inc()
