"""Prometheus metrics of the flags app (exposed on /metrics).

Label children are bound once and kept in a dict, so counting an evaluation
is a dict lookup and an increment.

Every label value is bounded, whatever callers send: a flag label is a flag
of the serving ruleset (any other key counts under ``UNKNOWN_FLAG``), levels
collapse ``rule:<n>`` to ``rule``, and no label value is longer than
``MAX_LABEL_LENGTH`` characters. The number of series therefore depends on
the rulesets served, never on what requests contain.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

from prometheus_client import Counter, Histogram

from flags.engine import Evaluation, Level, Reason

EVALUATIONS = Counter(
    "controlplane_flags_evaluations_total",
    "Flag evaluations served, by flag, variation, reason and resolution level.",
    ["flag", "variation", "reason", "level"],
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

UNKNOWN_FLAG = "__unknown__"
# Flag and variation keys are at most 100 characters (the models' limit), so
# a known key is never cut; the bound is for whatever else reaches a label.
MAX_LABEL_LENGTH = 100
LEVEL_ERROR = "error"
LEVEL_RULE = "rule"
LEVEL_OTHER = "other"
_LEVELS = {
    Level.OVERRIDE: Level.OVERRIDE,
    Level.DEFAULT: Level.DEFAULT,
    Level.OFF: Level.OFF,
}
# Bound on bound children: more than any real set of rulesets needs. Past it,
# new label sets count under the unknown flag instead of growing memory.
_MAX_CHILDREN = 50_000

# (flag or UNKNOWN_FLAG, variation, reason, engine level) -> counter child
_children: dict[tuple[str, str | None, str, str], object] = {}
_observe = EVALUATION_SECONDS.observe


def _bounded(value: str) -> str:
    return value if len(value) <= MAX_LABEL_LENGTH else value[:MAX_LABEL_LENGTH]


def _level_label(reason: str, level: str) -> str:
    """Return the bounded level label: override, rule, default, off or error."""
    if reason == Reason.ERROR:
        return LEVEL_ERROR
    label = _LEVELS.get(level)
    if label is not None:
        return label
    return LEVEL_RULE if level.startswith("rule:") else LEVEL_OTHER


def _child(key: tuple[str, str | None, str, str]) -> object:
    flag, variation, reason, level = key
    if len(_children) >= _MAX_CHILDREN:
        flag, variation = UNKNOWN_FLAG, None
        existing = _children.get((flag, variation, reason, level))
        if existing is not None:
            return existing
        key = (flag, variation, reason, level)
    child = EVALUATIONS.labels(
        _bounded(flag),
        _bounded(variation or ""),
        _bounded(reason),
        _level_label(reason, level),
    )
    _children[key] = child
    return child


def evaluations_counted(answers: Iterable[Evaluation], known: Container[str]) -> None:
    """Count answers; a flag key not in ``known`` counts as ``UNKNOWN_FLAG``.

    ``known`` is the serving ruleset's flags, so a caller's made-up keys can
    never become label values.
    """
    children = _children
    for answer in answers:
        flag = answer.flag_key
        if flag not in known:
            flag = UNKNOWN_FLAG
        key = (flag, answer.variation, answer.reason, answer.level)
        child = children.get(key)
        if child is None:
            child = _child(key)
        child.inc()


def evaluation_timed(seconds: float) -> None:
    """Record the engine time of one request."""
    _observe(seconds)


def ruleset_loaded(environment: str) -> None:
    """Count one ruleset compiled into memory for ``environment``."""
    RULESET_LOADS.labels(_bounded(environment)).inc()
