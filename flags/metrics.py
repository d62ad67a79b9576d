"""Prometheus metrics of the flags app (exposed on /metrics).

Every label value is bounded, whatever callers send: a flag label is a flag
of the serving ruleset (any other key counts under ``UNKNOWN_FLAG``), levels
collapse ``rule:<n>`` to ``rule``, and no label value is longer than
``MAX_LABEL_LENGTH`` characters. The number of series therefore depends on
the rulesets served, never on what requests contain.

Counting is off the request's critical path: a request adds to plain
per-thread tallies (a dict increment per answer, a list increment for the
timing), and the tallies are flushed into the Prometheus metrics every
``FLUSH_INTERVAL`` seconds by a background thread, whenever this process's
registry is collected (``/metrics`` of a single process, tests) and at
exit. With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` (an
empty directory, before the workers start): prometheus-client then keeps
each process's values in a file there and ``/metrics`` sums them at scrape
time, so a scrape sees every evaluation counted more than
``FLUSH_INTERVAL`` seconds ago, whichever worker it reaches. Label children
are bound once and kept in a dict.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Container, Iterable

from prometheus_client import REGISTRY, Counter, Histogram

from flags.engine import Evaluation, Level, Reason

FLUSH_INTERVAL = 0.5  # seconds


class _FlushOnCollect:
    """Flush the tallies when this process's registry is collected.

    Registered before the metrics below, so a collection sees them flushed.
    """

    def describe(self) -> list:
        return []

    def collect(self) -> list:
        flush()
        return []


REGISTRY.register(_FlushOnCollect())

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
HOTPATH_REQUESTS = Counter(
    "controlplane_flags_hotpath_requests_total",
    "Requests answered by the evaluation hot path (flags/hotpath), by route "
    "and status (Django's own request metrics do not see them).",
    ["route", "status"],
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
_BOUNDS = tuple(EVALUATION_SECONDS._upper_bounds[:-1])  # without +Inf


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


class _Tally:
    """One thread's counts since it started (written by that thread only)."""

    __slots__ = (
        "requests",
        "flushed_requests",
        "counts",
        "buckets",
        "seconds",
        "flushed",
        "flushed_buckets",
        "flushed_seconds",
    )

    def __init__(self) -> None:
        self.requests: dict[tuple[str, int], int] = {}
        self.flushed_requests: dict[tuple[str, int], int] = {}
        self.counts: dict[tuple[str, str | None, str, str], int] = {}
        self.buckets = [0] * (len(_BOUNDS) + 1)
        self.seconds = 0.0
        # what flush() has already added to the metrics (flush's own state)
        self.flushed: dict[tuple[str, str | None, str, str], int] = {}
        self.flushed_buckets = [0] * (len(_BOUNDS) + 1)
        self.flushed_seconds = 0.0


_local = threading.local()
_tallies: list[_Tally] = []
_lock = threading.Lock()
_flusher: threading.Thread | None = None


def _tally() -> _Tally:
    tally = _Tally()
    with _lock:
        _tallies.append(tally)
    _local.tally = tally
    _ensure_flusher()
    return tally


def evaluations_counted(answers: Iterable[Evaluation], known: Container[str]) -> None:
    """Count answers; a flag key not in ``known`` counts as ``UNKNOWN_FLAG``.

    ``known`` is the serving ruleset's flags, so a caller's made-up keys can
    never become label values.
    """
    try:
        counts = _local.tally.counts
    except AttributeError:
        counts = _tally().counts
    for answer in answers:
        flag = answer.flag_key
        if flag not in known:
            flag = UNKNOWN_FLAG
        key = (flag, answer.variation, answer.reason, answer.level)
        counts[key] = counts.get(key, 0) + 1


def evaluation_timed(seconds: float) -> None:
    """Record the engine time of one request."""
    try:
        tally = _local.tally
    except AttributeError:
        tally = _tally()
    tally.buckets[bisect_left(_BOUNDS, seconds)] += 1
    tally.seconds += seconds


def evaluations_served(
    answers: list[Evaluation], known: Container[str], seconds: float
) -> None:
    """Count one request's answers and its engine time (one call per request).

    ``evaluations_counted`` and ``evaluation_timed`` together, for the hot
    path: one thread-local lookup instead of two.
    """
    try:
        tally = _local.tally
    except AttributeError:
        tally = _tally()
    counts = tally.counts
    for answer in answers:
        flag = answer.flag_key
        if flag not in known:
            flag = UNKNOWN_FLAG
        key = (flag, answer.variation, answer.reason, answer.level)
        counts[key] = counts.get(key, 0) + 1
    tally.buckets[bisect_left(_BOUNDS, seconds)] += 1
    tally.seconds += seconds


def request_answered(route: str, status: int) -> None:
    """Count one request the hot path answered (``route`` is one of its four)."""
    try:
        requests = _local.tally.requests
    except AttributeError:
        requests = _tally().requests
    key = (route, status)
    requests[key] = requests.get(key, 0) + 1


def flush() -> None:
    """Add what every thread counted since the last flush to the metrics."""
    with _lock:
        tallies = list(_tallies)
        children = _children
        for tally in tallies:
            counts = tally.counts.copy()  # one C call: safe beside its writer
            flushed = tally.flushed
            for key, total in counts.items():
                delta = total - flushed.get(key, 0)
                if delta:
                    child = children.get(key)
                    if child is None:
                        child = _child(key)
                    child.inc(delta)
                    flushed[key] = total
            requests = tally.requests.copy()
            for key, total in requests.items():
                delta = total - tally.flushed_requests.get(key, 0)
                if delta:
                    HOTPATH_REQUESTS.labels(key[0], str(key[1])).inc(delta)
                    tally.flushed_requests[key] = total
            buckets = list(tally.buckets)
            seconds = tally.seconds
            for index, total in enumerate(buckets):
                delta = total - tally.flushed_buckets[index]
                if delta:
                    # prometheus-client keeps one value per bucket (summed
                    # at collection): add the batch to it at once
                    EVALUATION_SECONDS._buckets[index].inc(delta)
                    tally.flushed_buckets[index] = total
            if seconds != tally.flushed_seconds:
                EVALUATION_SECONDS._sum.inc(seconds - tally.flushed_seconds)
                tally.flushed_seconds = seconds


def _run_flusher() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        try:
            flush()
        except Exception:  # never let a metrics hiccup stop the counting
            pass


def _ensure_flusher() -> None:
    global _flusher
    if _flusher is not None and _flusher.is_alive():
        return
    with _lock:
        if _flusher is not None and _flusher.is_alive():
            return
        _flusher = threading.Thread(
            target=_run_flusher, name="metrics-flush", daemon=True
        )
        _flusher.start()


def _after_fork() -> None:
    # A forked worker starts from zero: the parent's tallies are its own.
    global _local, _tallies, _lock, _flusher
    _local = threading.local()
    _tallies = []
    _lock = threading.Lock()
    _flusher = None


os.register_at_fork(after_in_child=_after_fork)
atexit.register(flush)


def ruleset_loaded(environment: str) -> None:
    """Count one ruleset compiled into memory for ``environment``."""
    RULESET_LOADS.labels(_bounded(environment)).inc()
