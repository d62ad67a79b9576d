"""Rollback runs: capture, creation, retries, resumption, queueing.

With ``rollback.services.steps`` (claims and outcomes of a run's steps)
the only code that assigns run and step statuses. Each function is one
short transaction; actuators run between them with no transaction open.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from controlplane.audit.actors import Actor, as_actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from rollback.actuators import LEVEL_ACTUATORS
from rollback.actuators.deployment_revert import (
    BackendNotAllowed,
    BackendNotConfigured,
    BackendUnknown,
    backend_resolve,
)
from rollback.models import (
    Deployment,
    DeploymentStatus,
    RollbackRun,
    RollbackStep,
    RunStatus,
    StepStatus,
    Trigger,
)


def run_actor(run: RollbackRun) -> Actor:
    """Return the actor who asked for the run; its steps act on their behalf."""
    return Actor(type=run.actor_type, id=run.actor_id, name=run.actor_name)


def _env_key(run: RollbackRun) -> str:
    return run.deployment.environment.key if run.deployment_id else ""


def _queue(run_id: int, countdown: float | None = None) -> None:
    from rollback.tasks import rollback_run_execute_task

    if countdown:
        rollback_run_execute_task.apply_async(
            kwargs={"run_id": run_id}, countdown=countdown
        )
    else:
        rollback_run_execute_task.delay(run_id=run_id)


def flag_capture(*, flag: Any, environment: Any) -> dict[str, Any]:
    """Return a ``flag_restore`` dict: the flag state now and its override merchants.

    Give it to ``rollback_run_start`` later: level 1 restores this state and
    removes overrides added since (pilot merchants).
    """
    from flags.models import FlagState, MerchantOverride
    from flags.services import state_snapshot

    state = FlagState.objects.select_related("flag", "environment").get(
        flag=flag, environment=environment
    )
    merchants = MerchantOverride.objects.filter(flag=flag, environment=environment)
    return {
        "flag": state.flag.key,
        "environment": state.environment.key,
        "snapshot": state_snapshot(state),
        "overrides": sorted(merchants.values_list("merchant__key", flat=True)),
        "captured_at": timezone.now().isoformat(),
    }


def _flag_params(flag_restore: Any) -> dict[str, Any]:
    from flags.models import FlagState

    if (
        not isinstance(flag_restore, dict)
        or "flag" not in flag_restore
        or "environment" not in flag_restore
    ):
        raise InvalidInput(
            "flag_restore must be {flag, environment, snapshot}", field="flag_restore"
        )
    flag = flag_restore["flag"]
    environment = flag_restore["environment"]
    flag_key = getattr(flag, "key", flag)
    env_key = getattr(environment, "key", environment)
    if not FlagState.objects.filter(
        flag__key=flag_key, environment__key=env_key
    ).exists():
        raise NotFound(
            f"flag {flag_key!r} has no state in environment {env_key!r}",
            field="flag_restore",
        )
    snapshot = flag_restore.get("snapshot")
    if snapshot is not None and not (
        isinstance(snapshot, dict) and {"enabled", "fallthrough"} <= set(snapshot)
    ):
        raise InvalidInput(
            "snapshot must be a flags state_snapshot or null (kill)",
            field="flag_restore",
        )
    overrides = flag_restore.get("overrides")
    if overrides is None and snapshot is not None:
        overrides = snapshot.get("overrides")
    captured_at = flag_restore.get("captured_at")
    if captured_at is not None:
        captured_at = (
            captured_at.isoformat()
            if hasattr(captured_at, "isoformat")
            else str(captured_at)
        )
        if parse_datetime(captured_at) is None:
            raise InvalidInput(
                "captured_at must be an ISO 8601 time", field="flag_restore"
            )
    return {
        "flag": flag_key,
        "environment": env_key,
        "snapshot": snapshot,
        "overrides": list(overrides) if overrides is not None else None,
        "captured_at": captured_at,
    }


def _step_params(
    level: int,
    run_level: int,
    deployment: Deployment | None,
    flag_params: dict | None,
    backend: str | None,
) -> tuple[dict, str]:
    """Return (params, initial status) of the step for ``level``."""
    if level == 1:
        if flag_params is None:
            return {"note": "no flag given"}, StepStatus.SKIPPED
        return flag_params, StepStatus.PENDING
    assert deployment is not None and deployment.previous is not None
    if level == 2:
        if deployment.status == DeploymentStatus.REVERTED:
            return {
                "deployment_id": deployment.pk,
                "note": "deployment already reverted",
            }, StepStatus.SKIPPED
        name, _ = backend_resolve(service=deployment.service, name=backend)
        previous = deployment.previous
        return {
            "deployment_id": deployment.pk,
            "service": deployment.service,
            "environment": deployment.environment.key,
            "version": previous.version,
            "previous_version": deployment.version,
            "artifact": previous.artifact,
            "backend": name,
        }, StepStatus.PENDING
    return {
        "deployment_id": deployment.pk,
        "migration_state": deployment.migration_state,
    }, StepStatus.PENDING


def _backend_check(*, service: str, backend: str) -> None:
    """Refuse a named backend that is unknown (400) or not the service's (403)."""
    try:
        backend_resolve(service=service, name=backend)
    except BackendUnknown as exc:
        raise InvalidInput(str(exc), field="backend") from None
    except BackendNotAllowed as exc:
        raise Forbidden(str(exc), field="backend") from None
    except BackendNotConfigured:
        pass  # an unusable config: the preflight refuses it with its reason


def rollback_run_start(
    *,
    actor: Any,
    level: Any,
    reason: str,
    deployment: Any = None,
    flag_restore: dict | None = None,
    trigger: str = Trigger.MANUAL,
    trigger_ref: str = "",
    backend: str | None = None,
) -> RollbackRun:
    """Create a run with ordered steps for levels 1..level and queue it after commit.

    ``flag_restore`` is {flag, environment, snapshot, overrides?,
    captured_at?} (``flag_capture`` returns one): level 1 restores
    ``snapshot`` (a flags ``state_snapshot``) and removes the overrides of
    merchants not in ``overrides`` (or, without that list, overrides created
    after ``captured_at``); a null snapshot kills the flag. Without it
    the level-1 step is skipped. Raise InvalidInput (bad level, trigger or
    input, or a ``backend`` that is not configured), Forbidden (a ``backend``
    not bound to the deployment's service), NotFound (unknown deployment or
    flag) or Conflict (preflight says a level is impossible, e.g. a backend
    that cannot verify and is not marked idempotent, or a run for the
    deployment is in progress); nothing is written then.
    """
    from rollback.preflight import rollback_preflight
    from rollback.selectors import deployment_get

    if isinstance(level, bool) or not isinstance(level, int):
        try:
            level = int(str(level))
        except ValueError:
            raise InvalidInput(
                f"level must be 1, 2 or 3, not {level!r}", field="level"
            ) from None
    if level not in (1, 2, 3):
        raise InvalidInput(f"level must be 1, 2 or 3, not {level}", field="level")
    if trigger not in Trigger.values:
        raise InvalidInput(
            f"trigger must be one of {', '.join(Trigger.values)}", field="trigger"
        )
    # Always re-read: a caller's instance may be stale (e.g. already reverted).
    dep = (
        deployment_get(getattr(deployment, "pk", deployment))
        if deployment is not None
        else None
    )
    if level >= 2 and dep is None:
        raise InvalidInput(
            f"a level-{level} rollback needs a deployment", field="deployment"
        )
    flag_params = _flag_params(flag_restore) if flag_restore is not None else None
    if level == 1 and flag_params is None:
        raise InvalidInput(
            "a level-1 rollback needs flag_restore (the flag to restore or kill)",
            field="flag_restore",
        )
    if dep is not None and level >= 2 and backend:
        _backend_check(service=dep.service, backend=backend)
    if dep is not None and level >= 2:
        report = rollback_preflight(
            deployment=dep, levels=tuple(range(2, level + 1)), backend=backend
        )
        reasons = [
            f"level {n}: {r}" for n, rep in report.items() for r in rep["reasons"]
        ]
        if reasons:
            raise Conflict("rollback impossible: " + "; ".join(reasons), field="level")
    who = as_actor(actor)
    with audited_transaction():
        if dep is not None:
            dep = (
                Deployment.objects.select_for_update(of=("self",))
                .select_related("environment", "previous")
                .get(pk=dep.pk)
            )
            busy = RollbackRun.objects.filter(
                deployment=dep, status__in=[RunStatus.PENDING, RunStatus.RUNNING]
            ).first()
            if busy is not None:
                raise Conflict(
                    f"rollback run {busy.pk} is already in progress for deployment {dep.pk}",
                    field="deployment",
                )
        run = RollbackRun(
            deployment=dep,
            level=level,
            reason=(reason or "")[:1000],
            trigger=trigger,
            trigger_ref=trigger_ref or "",
            actor_type=who.type,
            actor_id=who.id,
            actor_name=who.name,
        )
        run.save()
        steps = []
        for position, step_level in enumerate(range(1, level + 1), start=1):
            params, status = _step_params(step_level, level, dep, flag_params, backend)
            steps.append(
                RollbackStep.objects.create(
                    run=run,
                    position=position,
                    level=step_level,
                    actuator=LEVEL_ACTUATORS[step_level],
                    params=params,
                    status=status,
                )
            )
        record_audit_event(
            actor=who,
            action="rollback.run_created",
            target=run,
            environment=_env_key(run),
            after={
                "level": level,
                "status": run.status,
                "deployment": dep.pk if dep else None,
            },
            details={
                "reason": run.reason,
                "trigger": trigger,
                "trigger_ref": run.trigger_ref,
                "steps": [f"{s.position}:{s.actuator}:{s.status}" for s in steps],
            },
        )
        run_id = run.pk
        transaction.on_commit(lambda: _queue(run_id))
    return run


def rollback_run_retry(*, actor: Any, run_id: Any) -> RollbackRun:
    """Retry a failed run from its failed step; raise InvalidTransition otherwise."""
    from rollback.selectors import rollback_run_get

    who = as_actor(actor)
    pk = rollback_run_get(run_id).pk
    with audited_transaction():
        run = (
            RollbackRun.objects.select_for_update(of=("self",))
            .select_related("deployment__environment")
            .get(pk=pk)
        )
        if run.status != RunStatus.FAILED:
            raise InvalidTransition(
                f"rollback run {run.pk} is {run.status}: only a failed run can be retried",
                field="run",
            )
        for step in RollbackStep.objects.select_for_update().filter(
            run=run, status=StepStatus.FAILED
        ):
            step.attempts, step.finished_at = 0, None
            step.status = StepStatus.PENDING
            step.save()
        run.error = ""
        before, run.status = run.status, RunStatus.RUNNING
        run.finished_at = None
        run.save(update_fields=["status", "error", "finished_at", "updated_at"])
        record_audit_event(
            actor=who,
            action="rollback.run_retried",
            target=run,
            environment=_env_key(run),
            before={"status": before},
            after={"status": run.status},
            details={},
        )
        transaction.on_commit(lambda: _queue(pk))
    return run


def rollback_runs_resume(*, stale_after_seconds: float = 60.0) -> list[int]:
    """Queue runs that look abandoned; return their ids.

    Abandoned: a step is running with an expired lease (its worker died:
    queued at once), or the run made no progress for ``stale_after_seconds``
    with no live lease (its task was lost). Safe to over-queue: claims make
    a duplicate delivery a no-op.
    """
    now = timezone.now()
    unfinished = [RunStatus.PENDING, RunStatus.RUNNING]
    running = RollbackStep.objects.filter(
        status=StepStatus.RUNNING, run__status__in=unfinished
    )
    expired = set(
        running.filter(lease_expires_at__lt=now).values_list("run_id", flat=True)
    )
    live = running.filter(lease_expires_at__gte=now).values_list("run_id", flat=True)
    idle = set(
        RollbackRun.objects.filter(
            status__in=unfinished,
            updated_at__lt=now - timedelta(seconds=stale_after_seconds),
        )
        .exclude(pk__in=live)
        .values_list("pk", flat=True)
    )
    ids = sorted(expired | idle)
    for run_id in ids:
        _queue(run_id)
    return ids


def rollback_run_queue(*, run_id: Any) -> RollbackRun:
    """Queue an unfinished run again; raise InvalidTransition when it is finished.

    Safe to call at any time: claims make a duplicate delivery a no-op.
    """
    from rollback.selectors import rollback_run_get

    run = rollback_run_get(run_id)
    if run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
        raise InvalidTransition(
            f"rollback run {run.pk} is already {run.status}", field="run"
        )
    _queue(run.pk)
    return run
