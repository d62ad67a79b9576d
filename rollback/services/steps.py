"""Rollback steps: claims, heartbeats, outcomes.

With ``rollback.services.runs`` the only code that assigns run and step
statuses: a step's claim starts its run, its finish moves the run on (or
ends it). Each function is one short transaction; the actuator runs
between the claim and the finish with no transaction open.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import models, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from controlplane.audit.actors import Actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.conf import setting
from controlplane.exceptions import (
    InvalidTransition,
)
from rollback import metrics
from rollback.actuators import ACTUATORS
from rollback.models import (
    RollbackRun,
    RollbackStep,
    RunStatus,
    StepStatus,
)
from rollback.services.runs import _env_key, run_actor
from rollback.transitions import run_can_move, step_can_move


@dataclass(frozen=True)
class Claim:
    """A step this worker now owns, until its lease expires."""

    step_id: int
    run_id: int
    token: str
    actuator: str
    params: dict
    attempt: int
    verify_first: bool
    reason: str
    actor: Actor
    # The process group the previous attempt left running (if any), and the
    # host it runs on: killed before the step is verified and retried.
    abandoned_group: int | None = None
    abandoned_host: str = ""


def _heartbeat_lease() -> timedelta:
    return timedelta(
        seconds=float(setting("ROLLBACK_STEP_HEARTBEAT_SECONDS"))
        + float(setting("ROLLBACK_STEP_LEASE_GRACE_SECONDS"))
    )


def _lease(step: RollbackStep) -> timedelta:
    actuator = ACTUATORS[step.actuator]
    if actuator.heartbeats(step.params):
        # Renewed while the command runs: a dead worker's lease ends soon.
        return _heartbeat_lease()
    seconds = actuator.timeout(step.params) + float(
        setting("ROLLBACK_STEP_LEASE_GRACE_SECONDS")
    )
    return timedelta(seconds=seconds)


def _run_move(run: RollbackRun, to: str, *, action: str, details: dict) -> None:
    if not run_can_move(run.status, to):
        raise InvalidTransition(
            f"rollback run {run.pk} cannot go from {run.status} to {to}"
        )
    before, run.status = run.status, to
    now = timezone.now()
    if to == RunStatus.RUNNING and run.started_at is None:
        run.started_at = now
    if to in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        run.finished_at = now
    run.save(
        update_fields=["status", "started_at", "finished_at", "error", "updated_at"]
    )
    record_audit_event(
        actor=run_actor(run),
        action=action,
        target=run,
        environment=_env_key(run),
        before={"status": before},
        after={"status": to},
        details=details,
    )
    if to in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        level, outcome = run.level, to
        transaction.on_commit(
            lambda: metrics.run_finished(level=level, outcome=outcome)
        )


def _step_move(
    step: RollbackStep, run: RollbackRun, to: str, *, action: str, details: dict
) -> None:
    if not step_can_move(step.status, to):
        raise InvalidTransition(f"step {step.pk} cannot go from {step.status} to {to}")
    before, step.status = step.status, to
    step.save()
    record_audit_event(
        actor=run_actor(run),
        action=action,
        target=step,
        environment=_env_key(run),
        before={"status": before},
        after={"status": to, "attempts": step.attempts},
        details={
            "run": run.pk,
            "position": step.position,
            "actuator": step.actuator,
            **details,
        },
    )


def rollback_step_claim(*, run_id: int, worker: str = "") -> Claim | None:
    """Claim the next step of a run for this worker, or return None.

    None means: the run is finished (it is closed here when its last step
    succeeded), or another worker holds a live claim on the current step.
    A step found running with an expired lease is taken over with
    ``verify_first`` set: the caller checks reality before re-running it.
    """
    with audited_transaction():
        run = (
            RollbackRun.objects.select_for_update(of=("self",))
            .select_related("deployment__environment")
            .filter(pk=run_id)
            .first()
        )
        if run is None or run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return None
        if run.status == RunStatus.PENDING:
            _run_move(
                run,
                RunStatus.RUNNING,
                action="rollback.run_started",
                details={"worker": worker},
            )
        steps = list(
            RollbackStep.objects.select_for_update()
            .filter(run=run)
            .order_by("position")
        )
        step = next(
            (
                s
                for s in steps
                if s.status not in (StepStatus.SUCCEEDED, StepStatus.SKIPPED)
            ),
            None,
        )
        if step is None:
            _run_move(
                run,
                RunStatus.SUCCEEDED,
                action="rollback.run_completed",
                details={
                    "steps": [f"{s.position}:{s.actuator}:{s.status}" for s in steps]
                },
            )
            return None
        now = timezone.now()
        if (
            step.status == StepStatus.RUNNING
            and step.lease_expires_at
            and step.lease_expires_at > now
        ):
            return None  # another worker is on it
        if step.status == StepStatus.FAILED:
            return None
        verify_first = step.status == StepStatus.RUNNING
        previous_worker = step.claimed_by
        abandoned_group = step.process_group if verify_first else None
        abandoned_host = step.process_host if verify_first else ""
        step.process_group, step.process_host = None, ""
        step.attempts += 1
        step.claim_token = uuid.uuid4().hex
        step.claimed_by = worker[:200]
        step.started_at = step.started_at or now
        step.lease_expires_at = now + _lease(step)
        action = "rollback.step_reclaimed" if verify_first else "rollback.step_started"
        details = {"attempt": step.attempts, "worker": worker}
        if verify_first:
            details["abandoned_by"] = previous_worker
            if abandoned_group:
                details["abandoned_process_group"] = (
                    f"{abandoned_group}@{abandoned_host}"
                )
        _step_move(step, run, StepStatus.RUNNING, action=action, details=details)
        return Claim(
            step_id=step.pk,
            run_id=run.pk,
            token=step.claim_token,
            actuator=step.actuator,
            params=step.params,
            attempt=step.attempts,
            verify_first=verify_first,
            reason=run.reason,
            actor=run_actor(run),
            abandoned_group=abandoned_group,
            abandoned_host=abandoned_host,
        )


def _claim_rows(claim: Claim):
    return RollbackStep.objects.filter(
        pk=claim.step_id, status=StepStatus.RUNNING, claim_token=claim.token
    )


def rollback_step_heartbeat(*, claim: Claim) -> bool:
    """Renew a claim's lease; return False when the claim is no longer held.

    Lease bookkeeping, not a change of the step's state: no audit event. The
    lease never shrinks (a long actuator timeout keeps its longer lease).
    """
    now = timezone.now()
    lease = models.Value(now + _heartbeat_lease(), output_field=models.DateTimeField())
    return bool(
        _claim_rows(claim).update(
            lease_expires_at=Greatest(models.F("lease_expires_at"), lease),
            updated_at=now,
        )
    )


def rollback_step_process_started(*, claim: Claim, pgid: int, host: str) -> bool:
    """Record the process group a claimed step's command runs in.

    Bookkeeping for the worker that may take the step over (no audit
    event); return False when the claim is no longer held.
    """
    return bool(
        _claim_rows(claim).update(
            process_group=pgid, process_host=host[:200], updated_at=timezone.now()
        )
    )


def rollback_step_finish(
    *,
    claim: Claim,
    succeeded: bool,
    output: str = "",
    error: str = "",
    retryable: bool = True,
    verified: bool = False,
) -> float | None:
    """Record a claimed step's outcome; return a retry delay in seconds or None.

    A success of a deployment revert marks the deployment reverted in the
    same transaction. A failure is retried (pending again, with backoff)
    while attempts remain and it is retryable; otherwise the step and the
    run fail, saying where the rollback stopped. A claim that was taken over
    meanwhile is ignored.
    """
    from rollback.services.deployments import deployment_mark_reverted

    with audited_transaction():
        run = (
            RollbackRun.objects.select_for_update(of=("self",))
            .select_related("deployment__environment")
            .get(pk=claim.run_id)
        )
        step = RollbackStep.objects.select_for_update().get(pk=claim.step_id)
        if step.status != StepStatus.RUNNING or step.claim_token != claim.token:
            return None
        now = timezone.now()
        step.output = (
            f"{step.output}\n--- attempt {claim.attempt} ---\n" if step.output else ""
        ) + output
        step.lease_expires_at = None
        step.process_group, step.process_host = None, ""
        if succeeded:
            step.finished_at, step.error = now, ""
            if step.actuator == "deployment_revert":
                # Before the step's audit event: deployment rows are locked
                # before the audit chain lock, as deployment_record does.
                deployment_mark_reverted(
                    actor=run_actor(run),
                    deployment_id=step.params["deployment_id"],
                    run_id=run.pk,
                )
            _step_move(
                step,
                run,
                StepStatus.SUCCEEDED,
                action="rollback.step_succeeded",
                details={"attempt": claim.attempt, "verified_only": verified},
            )
            outcome = "verified" if verified else "succeeded"
            transaction.on_commit(
                lambda: metrics.step_finished(actuator=claim.actuator, outcome=outcome)
            )
            return None
        step.error = error[:5000]
        max_attempts = int(setting("ROLLBACK_STEP_MAX_ATTEMPTS"))
        if retryable and step.attempts < max_attempts:
            delay = min(
                float(setting("ROLLBACK_RETRY_BACKOFF_SECONDS"))
                * (2 ** (step.attempts - 1)),
                float(setting("ROLLBACK_RETRY_BACKOFF_MAX_SECONDS")),
            )
            _step_move(
                step,
                run,
                StepStatus.PENDING,
                action="rollback.step_failed",
                details={
                    "attempt": claim.attempt,
                    "error": step.error,
                    "will_retry": True,
                    "retry_in_seconds": delay,
                },
            )
            transaction.on_commit(
                lambda: metrics.step_finished(
                    actuator=claim.actuator, outcome="retried"
                )
            )
            return delay
        step.finished_at = now
        _step_move(
            step,
            run,
            StepStatus.FAILED,
            action="rollback.step_failed",
            details={
                "attempt": claim.attempt,
                "error": step.error,
                "will_retry": False,
            },
        )
        later = list(
            RollbackStep.objects.filter(
                run=run, position__gt=step.position
            ).values_list("actuator", flat=True)
        )
        run.error = (
            f"stopped at step {step.position} ({step.actuator}) after {step.attempts} attempt(s): "
            f"{step.error}" + (f"; not run: {', '.join(later)}" if later else "")
        )[:5000]
        _run_move(
            run,
            RunStatus.FAILED,
            action="rollback.run_failed",
            details={
                "failed_step": step.position,
                "actuator": step.actuator,
                "error": step.error,
                "not_run": later,
            },
        )
        transaction.on_commit(
            lambda: metrics.step_finished(actuator=claim.actuator, outcome="failed")
        )
        return None
