"""Fail a phase and roll a rollout back (through the rollback engine)."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from canary import clock
from canary.exceptions import Conflict, InvalidInput, RolloutInvalidTransition
from canary.health import ON_FAILURE_SEVERITY
from canary.models import Rollout
from canary.services._common import (
    Status,
    env_key,
    lock_rollout,
    phase_running_time,
)
from canary.services.flag_moves import flag_restore, overrides_restore
from canary.services.rollouts import rollout_transition
from canary.services.verification import verification_capture, verification_open
from canary.transitions import ACTIVE
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import DomainError
from flags.models import Environment, Flag

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from controlplane.audit.actors import Actor
    from rollback.models import RollbackRun


def _most_severe_on_failure(rollout: Rollout) -> str:
    actions = list(rollout.checks.values_list("on_failure", flat=True)) or [
        "rollback_1"
    ]
    return max(actions, key=lambda action: ON_FAILURE_SEVERITY.get(action, 1))


def rollout_fail_phase(
    *,
    rollout_id: int,
    actor: Any,
    reason: str,
    on_failure: str | None = None,
    details: dict | None = None,
) -> Rollout:
    """Fail the current phase and act on it: pause, or roll back.

    ``on_failure`` (pause, rollback_1..3) defaults to the most severe
    ``on_failure`` of the rollout's checks (rollback_1 without checks).
    Writes ``rollout.phase_failed``, then the transition. Usable by an
    operator at any moment and by the controller when a check fails.
    Raise RolloutInvalidTransition unless running, awaiting approval or
    paused; InvalidInput for an unknown on_failure.
    """
    if on_failure is not None and on_failure not in ON_FAILURE_SEVERITY:
        raise InvalidInput(
            f"on_failure: must be one of {', '.join(ON_FAILURE_SEVERITY)}",
            field="on_failure",
        )
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            return rollout  # already being put back: a duplicate
        if rollout.status not in ACTIVE:
            raise RolloutInvalidTransition(
                rollout.status, "failed", rollout_id=rollout.pk
            )
        action = on_failure or _most_severe_on_failure(rollout)
        record_audit_event(
            actor=actor,
            action="rollout.phase_failed",
            target=rollout,
            environment=env_key(rollout),
            details={
                "phase": rollout.current_phase,
                "on_failure": action,
                "reason": reason,
                **(details or {}),
            },
        )
        if action == "pause":
            if rollout.status != Status.PAUSED:
                rollout = rollout_transition(
                    rollout_id=rollout.pk,
                    to=Status.PAUSED,
                    actor=actor,
                    reason=reason,
                    details=details,
                )
            return rollout
        return rollout_begin_rollback(
            rollout_id=rollout.pk,
            level=int(action.rsplit("_", 1)[1]),
            actor=actor,
            reason=reason,
            details=details,
        )


def rollout_begin_rollback(
    *,
    rollout_id: int,
    level: int,
    actor: Any,
    reason: str,
    details: dict | None = None,
) -> Rollout:
    """Move to rolling_back and hand the rollback to the rollback engine.

    In one transaction: the transition (audited with the level), the pilot
    overrides put back as captured (the rollback engine restores flag
    states, not overrides), and ``rollback.services.rollback_run_start``
    with the captured flag state as ``flag_restore``. The rollout stays
    rolling_back until ``rollout_rollback_finished``. Without a rollback
    engine installed, restore the captured flag state directly and go
    rolled_back. A level above ``max_level``, or above 1 without a
    deployment, is lowered to the highest one possible. Already rolling
    back or rolled back: unchanged (no second run; ``rollout_escalate``
    goes further). Raise InvalidInput for a level outside 1..3,
    RolloutInvalidTransition from draft or a finished status.
    """
    if level not in (1, 2, 3):
        raise InvalidInput("level: must be 1, 2 or 3", field="level")
    try:
        from rollback.services import rollback_run_start
    except ImportError:
        rollback_run_start = None
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            return rollout
        rollout = rollout_transition(
            rollout_id=rollout.pk,
            to=Status.ROLLING_BACK,
            actor=actor,
            reason=reason,
            details={"level": level, **(details or {})},
        )
        # Before the flag moves back: who was treated, for the verification.
        treated = verification_capture(rollout)
        problems = overrides_restore(rollout, actor, f"rollback: {reason}")
        if rollback_run_start is None:
            problems += flag_restore(rollout, actor, f"rollback: {reason}")
            return rollout_transition(
                rollout_id=rollout.pk,
                to=Status.ROLLED_BACK,
                actor=actor,
                reason="flag state restored (no rollback engine installed)",
                details={"level": 1, "restore_problems": problems},
            )
        restore_spec = {
            "flag": Flag.objects.get(pk=rollout.flag_id),
            "environment": Environment.objects.get(pk=rollout.environment_id),
            # Pilot overrides were put back above; the run restores the state.
            "snapshot": rollout.captured_state,
        }
        # A rollout in progress always gets its flag put back: a level it
        # cannot reach is lowered (and audited as requested vs run).
        run_level = min(level, rollout.max_level) if rollout.deployment_id else 1
        try:
            # A savepoint: a refused run (preflight) must not undo the rest.
            with audited_transaction():
                run = rollback_run_start(
                    actor=actor,
                    level=run_level,
                    reason=reason,
                    deployment=rollout.deployment,
                    flag_restore=restore_spec,
                    trigger="rollout",
                    trigger_ref=str(rollout.pk),
                )
        except DomainError as exc:
            if run_level == 1:
                raise
            # Reverting the deployment is impossible: still put the flag back.
            refused = exc.message
            run_level = 1
            run = rollback_run_start(
                actor=actor,
                level=1,
                reason=f"{reason} (level {level} refused: {refused})",
                deployment=rollout.deployment,
                flag_restore=restore_spec,
                trigger="rollout",
                trigger_ref=str(rollout.pk),
            )
        record_audit_event(
            actor=actor,
            action="rollout.rollback_started",
            target=rollout,
            environment=env_key(rollout),
            details={
                "requested_level": level,
                "level": run_level,
                "rollback_run": run.pk,
                "override_problems": problems,
                "treated_merchants": treated,
                "reason": reason,
            },
        )
    return rollout


def _level_clean(level: Any) -> int:
    if isinstance(level, bool) or level not in (1, 2, 3):
        raise InvalidInput("level: must be 1, 2 or 3", field="level")
    return int(level)


def rollout_rollback_runs(rollout: Rollout) -> QuerySet[RollbackRun]:
    """Return the rollback runs started for ``rollout``, oldest first."""
    from rollback.models import RollbackRun, Trigger

    return RollbackRun.objects.filter(
        trigger=Trigger.ROLLOUT, trigger_ref=str(rollout.pk)
    ).order_by("id")


def rollout_rollback(
    *, rollout_id: int, level: int, actor: Actor, reason: str
) -> Rollout:
    """Roll the rollout back at ``level`` now, whatever stage it is in.

    What an operator's "roll back" means: a rollout in progress starts its
    rollback (``rollout_begin_rollback``); one already rolling back or
    rolled back escalates to ``level`` (``rollout_escalate``), or is refused
    with the reason. Raise as those two do.
    """
    level = _level_clean(level)
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            rollout_escalate(
                rollout_id=rollout.pk, level=level, actor=actor, reason=reason
            )
            return lock_rollout(rollout.pk)
        return rollout_begin_rollback(
            rollout_id=rollout.pk, level=level, actor=actor, reason=reason
        )


def rollout_escalate(
    *,
    rollout_id: int,
    level: int,
    actor: Actor,
    reason: str,
    details: dict | None = None,
) -> RollbackRun:
    """Escalate a rolled-back rollout's rollback to ``level``; return the run.

    For a rollout rolling back (its last run failed) or rolled back at a
    lower level: start a RollbackRun of ``level`` for its deployment
    (``rollback.services.rollback_run_start``, whose preflight checks every
    level from 2 up: a live or already reverted deployment with a previous
    one and a backend, a reversible migration plan). The flag is restored
    again only if no run of the rollout restored it yet; a deployment
    already reverted is skipped, so 2 then 3 reverts the migrations only.
    Writes ``rollout.rollback_escalated``; the rollout's status does not
    change (rolled_back is final; a rolling-back one is finished by the
    controller when the new run ends). For operators and the controller.

    Raise InvalidInput for a level outside 1..3; Conflict (409, nothing
    written) when the rollout was never rolled back, a run of it is still
    in progress, ``level`` is not above the level already reached, is above
    ``max_level``, needs a deployment the rollout does not have, or the
    rollback preflight refuses it.
    """
    from rollback.models import RunStatus, StepStatus
    from rollback.services import rollback_run_start

    level = _level_clean(level)
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status not in (Status.ROLLING_BACK, Status.ROLLED_BACK):
            raise Conflict(
                f"rollout {rollout.pk} is {rollout.status}: only a rollout that was "
                "rolled back escalates (roll it back first)",
                field="status",
            )
        runs = list(rollout_rollback_runs(rollout))
        busy = next(
            (r for r in runs if r.status in (RunStatus.PENDING, RunStatus.RUNNING)),
            None,
        )
        if busy is not None:
            raise Conflict(
                f"rollback run {busy.pk} (level {busy.level}) of rollout {rollout.pk} "
                f"is still {busy.status}: escalate once it has finished",
                field="level",
            )
        done = [r for r in runs if r.status == RunStatus.SUCCEEDED]
        reached = max((r.level for r in done), default=0)
        if level <= reached:
            last = max((r for r in done if r.level == reached), key=lambda r: r.pk)
            raise Conflict(
                f"rollout {rollout.pk} is already rolled back at level {reached} "
                f"(rollback run {last.pk}): ask for a higher level",
                field="level",
            )
        if level > rollout.max_level:
            raise Conflict(
                f"level {level} is above rollout {rollout.pk}'s max_level "
                f"{rollout.max_level}",
                field="level",
            )
        if level >= 2 and rollout.deployment_id is None:
            raise Conflict(
                f"rollout {rollout.pk} has no deployment recorded: level {level} "
                "reverts a deployment",
                field="level",
            )
        flag_restored = any(
            step.actuator == "flag_toggle" and step.status == StepStatus.SUCCEEDED
            for run in runs
            for step in run.steps.all()
        )
        restore_spec = None
        # Level 1 again (after a failed run) is a retry: restoring the
        # captured state twice is harmless.
        if not flag_restored or level == 1:
            restore_spec = {
                "flag": Flag.objects.get(pk=rollout.flag_id),
                "environment": Environment.objects.get(pk=rollout.environment_id),
                "snapshot": rollout.captured_state,
            }
        run = rollback_run_start(
            actor=actor,
            level=level,
            reason=reason,
            deployment=rollout.deployment_id,
            flag_restore=restore_spec,
            trigger="rollout",
            trigger_ref=str(rollout.pk),
        )
        record_audit_event(
            actor=actor,
            action="rollout.rollback_escalated",
            target=rollout,
            environment=env_key(rollout),
            before={"level": reached},
            after={"level": level},
            details={
                "from_level": reached,
                "level": level,
                "rollback_run": run.pk,
                "restores_flag": restore_spec is not None,
                "status": rollout.status,
                "reason": reason,
                **(details or {}),
            },
        )
    return run


def rollout_rollback_finished(
    *,
    rollout_id: int,
    actor: Any,
    succeeded: bool,
    reason: str = "",
    details: dict | None = None,
) -> Rollout:
    """Record the end of the rollout's rollback run.

    Succeeded: rolling_back -> rolled_back. Failed: stays rolling_back with a
    ``rollout.rollback_failed`` audit event (an operator must act). Already
    rolled back: unchanged. Raise RolloutInvalidTransition otherwise.
    """
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status == Status.ROLLED_BACK:
            return rollout
        if rollout.status != Status.ROLLING_BACK:
            raise RolloutInvalidTransition(
                rollout.status, Status.ROLLED_BACK, rollout_id=rollout.pk
            )
        if succeeded:
            rollout = rollout_transition(
                rollout_id=rollout.pk,
                to=Status.ROLLED_BACK,
                actor=actor,
                reason=reason or "rollback finished",
                details=details,
            )
            run = rollout_rollback_runs(rollout).filter(status="succeeded").last()
            if run is not None:
                # The checks keep measuring the formerly treated merchants.
                rollout = verification_open(
                    rollout_id=rollout.pk, run_id=run.pk, actor=actor
                )
            return rollout
        record_audit_event(
            actor=actor,
            action="rollout.rollback_failed",
            target=rollout,
            environment=env_key(rollout),
            details={"reason": reason, **(details or {})},
        )
    return rollout


def rollout_restore_flag(*, rollout_id: int, actor: Any, reason: str) -> list[str]:
    """Put the flag state and pilot overrides back as captured at start
    (what a level-1 rollback does), without changing the rollout's status.
    Return what could not be restored. For the controller and tools."""
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.captured_state is None:
            raise Conflict(
                f"rollout {rollout.pk} never started: nothing to restore",
                field="rollout",
            )
        return flag_restore(rollout, actor, reason)


def rollout_phase_elapsed(rollout: Rollout, now: dt.datetime | None = None) -> float:
    """Return the seconds the current phase has spent running (0 if it never
    went live): the time that counts toward ``min_duration``."""
    if rollout.phase_started_at is None:
        return 0.0
    return phase_running_time(rollout, now or clock.now())
