"""Operator moves of a started rollout: approve, pause, resume, abort.

Same rules as ``canary.services.rollouts``: each locks the rollout row,
writes in one transaction with its audit event through
``rollout_transition``, and is safe to call twice.
"""

from __future__ import annotations

from typing import Any

from canary import clock
from canary.exceptions import (
    RolloutInvalidTransition,
)
from canary.models import Rollout
from canary.services._common import Status, env_key, lock_rollout
from canary.services.checks import (
    checks_reset,
    rollout_is_approved,
)
from canary.services.flag_moves import (
    flag_restore,
)
from canary.services.rollouts import rollout_transition
from canary.transitions import ACTIVE, is_allowed
from controlplane.audit.services import audited_transaction, record_audit_event


def rollout_approve(
    *,
    rollout_id: int,
    actor: Any,
    reason: str = "",
    expected_phase: int | None = None,
) -> Rollout:
    """Approve leaving the current phase; awaiting_approval -> running.

    May be given ahead of time while running or paused. With
    ``expected_phase``, an approval meant for another phase is ignored (the
    rollout moved on). Already approved: no new event (only the move to
    running if still awaiting). Writes ``rollout.approved``. Raise
    RolloutInvalidTransition for a rollout that is not in progress.
    """
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status not in ACTIVE:
            raise RolloutInvalidTransition(
                rollout.status, "approved", rollout_id=rollout.pk
            )
        if expected_phase is not None and expected_phase != rollout.current_phase:
            return rollout
        if not rollout_is_approved(rollout):
            before = rollout.approved_phase
            rollout.approved_phase = rollout.current_phase
            rollout.version += 1
            rollout.save(update_fields=["approved_phase", "version", "updated_at"])
            record_audit_event(
                actor=actor,
                action="rollout.approved",
                target=rollout,
                environment=env_key(rollout),
                before={"approved_phase": before},
                after={"approved_phase": rollout.approved_phase},
                details={"reason": reason, "phase": rollout.current_phase},
            )
        if rollout.status == Status.AWAITING_APPROVAL:
            rollout = rollout_transition(
                rollout_id=rollout.pk,
                to=Status.RUNNING,
                actor=actor,
                reason=f"approved: {reason}" if reason else "approved",
            )
    return rollout


def rollout_pause(
    *, rollout_id: int, actor: Any, reason: str, details: dict | None = None
) -> Rollout:
    """Pause the rollout (checks keep running; a failure still acts).
    Already paused: unchanged. Raise RolloutInvalidTransition otherwise."""
    return rollout_transition(
        rollout_id=rollout_id,
        to=Status.PAUSED,
        actor=actor,
        reason=reason,
        details=details,
    )


def rollout_resume(*, rollout_id: int, actor: Any, reason: str = "") -> Rollout:
    """Resume a paused rollout: running again, the current phase's check
    counters start afresh (past failures, inconclusive and error counts are
    cleared; their check runs are kept) and checks are due now. Already
    running: unchanged. Raise RolloutInvalidTransition unless paused."""
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status == Status.RUNNING:
            return rollout
        if rollout.status != Status.PAUSED:
            raise RolloutInvalidTransition(
                rollout.status, Status.RUNNING, rollout_id=rollout.pk
            )
        rollout = rollout_transition(
            rollout_id=rollout.pk,
            to=Status.RUNNING,
            actor=actor,
            reason=reason or "resumed",
        )
        checks_reset(
            rollout=rollout, phase_index=rollout.current_phase, now=clock.now()
        )
    return rollout


def rollout_abort(*, rollout_id: int, actor: Any, reason: str) -> Rollout:
    """Abort: status aborted, and (if it started) the flag state and pilot
    overrides are put back as captured at start, in the same transaction.
    Already aborted: unchanged. Raise RolloutInvalidTransition for a
    completed, rolling-back or rolled-back rollout."""
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status == Status.ABORTED:
            return rollout
        if not is_allowed(rollout.status, Status.ABORTED):
            raise RolloutInvalidTransition(
                rollout.status, Status.ABORTED, rollout_id=rollout.pk
            )
        problems = flag_restore(rollout, actor, f"aborted: {reason}")
        rollout = rollout_transition(
            rollout_id=rollout.pk,
            to=Status.ABORTED,
            actor=actor,
            reason=reason,
            details={
                "restored": rollout.captured_state is not None,
                "restore_problems": problems,
            },
        )
    return rollout
