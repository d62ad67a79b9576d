"""Allowed status moves of rollback runs and steps, written down once."""

from __future__ import annotations

from rollback.models import RunStatus, StepStatus

RUN_ALLOWED: dict[str, frozenset[str]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.FAILED}),
    RunStatus.RUNNING: frozenset({RunStatus.SUCCEEDED, RunStatus.FAILED}),
    # A failed run may be retried by an operator.
    RunStatus.FAILED: frozenset({RunStatus.RUNNING}),
    RunStatus.SUCCEEDED: frozenset(),
}

STEP_ALLOWED: dict[str, frozenset[str]] = {
    StepStatus.PENDING: frozenset({StepStatus.RUNNING, StepStatus.SKIPPED}),
    # running -> pending: a retry is scheduled; running -> running: a claim
    # that outlived its lease is taken over (after verify) by another worker.
    StepStatus.RUNNING: frozenset(
        {
            StepStatus.SUCCEEDED,
            StepStatus.FAILED,
            StepStatus.PENDING,
            StepStatus.RUNNING,
        }
    ),
    StepStatus.FAILED: frozenset({StepStatus.PENDING}),
    StepStatus.SUCCEEDED: frozenset(),
    StepStatus.SKIPPED: frozenset(),
}


def run_can_move(current: str, to: str) -> bool:
    """Return whether a run may move from ``current`` to ``to``."""
    return to in RUN_ALLOWED[current]


def step_can_move(current: str, to: str) -> bool:
    """Return whether a step may move from ``current`` to ``to``."""
    return to in STEP_ALLOWED[current]
