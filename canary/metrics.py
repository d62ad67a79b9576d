"""Prometheus metrics of canary rollouts (exposed on /metrics).

* ``controlplane_canary_rollouts{status}`` and
  ``controlplane_canary_rollout_phase{rollout}`` are read from the database
  at scrape time by :class:`RolloutCollector` (two small queries), so every
  process exposes the same truth whichever process moved the rollout.
* ``controlplane_canary_check_verdicts_total{provider,verdict}``,
  ``controlplane_canary_automatic_rollbacks_total{cause}`` and
  ``controlplane_canary_breach_to_rollback_seconds`` are counted by the
  controller in the process that runs it (the Celery worker, or the web
  process in the zero-setup demo loop).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric

logger = logging.getLogger(__name__)

CHECK_VERDICTS = Counter(
    "controlplane_canary_check_verdicts",
    "Health-check measurements recorded by the controller, by provider and verdict.",
    ["provider", "verdict"],
)
AUTOMATIC_ROLLBACKS = Counter(
    "controlplane_canary_automatic_rollbacks",
    "Rollbacks the controller started by itself, by cause (the failed check's provider).",
    ["cause"],
)
BREACH_TO_ROLLBACK_SECONDS = Histogram(
    "controlplane_canary_breach_to_rollback_seconds",
    "Seconds from a check's first failing measurement to the controller starting "
    "the rollback.",
    buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 120, 300),
)
TICK_SECONDS = Histogram(
    "controlplane_canary_tick_seconds",
    "Duration of one controller tick (claim, measure, record, decide).",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)


def check_verdict_counted(provider: str, verdict: str) -> None:
    """Count one recorded measurement."""
    CHECK_VERDICTS.labels(provider=provider, verdict=verdict).inc()


def automatic_rollback_counted(cause: str, breach_seconds: float | None) -> None:
    """Count one automatic rollback and the time since its first breach."""
    AUTOMATIC_ROLLBACKS.labels(cause=cause).inc()
    if breach_seconds is not None and breach_seconds >= 0:
        BREACH_TO_ROLLBACK_SECONDS.observe(breach_seconds)


class RolloutCollector:
    """Read rollouts by status and the current phase of active ones."""

    def describe(self) -> Iterator[Metric]:
        # Describing without samples keeps registration free of queries.
        yield GaugeMetricFamily(
            "controlplane_canary_rollouts", "Rollouts by status.", labels=["status"]
        )
        yield GaugeMetricFamily(
            "controlplane_canary_rollout_phase",
            "Current phase index of each rollout in progress.",
            labels=["rollout"],
        )

    def collect(self) -> Iterator[Metric]:
        from django.db.models import Count

        from canary.models import Rollout, RolloutStatus
        from canary.transitions import ACTIVE

        try:
            counts = dict(
                Rollout.objects.order_by()
                .values_list("status")
                .annotate(n=Count("id"))
                .values_list("status", "n")
            )
            phases = list(
                Rollout.objects.filter(
                    status__in=[*ACTIVE, RolloutStatus.ROLLING_BACK]
                ).values_list("pk", "current_phase")
            )
        except Exception as exc:  # a scrape must not fail with the database
            logger.warning("canary rollout metrics unavailable: %s", exc)
            return
        by_status = GaugeMetricFamily(
            "controlplane_canary_rollouts", "Rollouts by status.", labels=["status"]
        )
        for status in RolloutStatus.values:
            by_status.add_metric([status], counts.get(status, 0))
        yield by_status
        phase = GaugeMetricFamily(
            "controlplane_canary_rollout_phase",
            "Current phase index of each rollout in progress.",
            labels=["rollout"],
        )
        for pk, index in phases:
            phase.add_metric([str(pk)], index)
        yield phase


_registered = False
_lock = threading.Lock()


def register_collector() -> None:
    """Register :class:`RolloutCollector` once in the default registry."""
    global _registered
    with _lock:
        if _registered:
            return
        REGISTRY.register(RolloutCollector())
        _registered = True
