"""Prometheus counters of the rollback engine (incremented after commit)."""

from __future__ import annotations

from prometheus_client import Counter

ROLLBACK_RUNS = Counter(
    "controlplane_rollback_runs_total",
    "Rollback runs that finished, by requested level and outcome.",
    ["level", "outcome"],
)
ROLLBACK_STEPS = Counter(
    "controlplane_rollback_steps_total",
    "Rollback step attempts that ended, by actuator and outcome.",
    ["actuator", "outcome"],
)


def run_finished(*, level: int, outcome: str) -> None:
    ROLLBACK_RUNS.labels(level=str(level), outcome=outcome).inc()


def step_finished(*, actuator: str, outcome: str) -> None:
    ROLLBACK_STEPS.labels(actuator=actuator, outcome=outcome).inc()
