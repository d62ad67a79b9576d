"""Deployment records: what CI deployed, and what a revert put back."""

from __future__ import annotations

from typing import Any

from controlplane.audit.actors import as_actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import InvalidInput, NotFound
from flags.models import Environment
from rollback.models import Deployment, DeploymentStatus


def _environment(value: Any) -> Environment:
    if isinstance(value, Environment):
        return value
    found = Environment.objects.filter(key=str(value or "")).first()
    if found is None:
        raise NotFound(f"environment {value!r} does not exist", field="environment")
    return found


def _snapshot(deployment: Deployment) -> dict[str, Any]:
    return {
        "service": deployment.service,
        "environment": deployment.environment.key,
        "version": deployment.version,
        "artifact": deployment.artifact,
        "status": deployment.status,
        "previous": deployment.previous_id,
    }


def _check_migration_state(state: Any) -> dict:
    if not isinstance(state, dict) or not all(
        isinstance(apps, dict)
        and all(
            isinstance(app, str) and (name is None or isinstance(name, str))
            for app, name in apps.items()
        )
        for apps in state.values()
    ):
        raise InvalidInput(
            "migration_state must be {alias: {app: migration name or null}}",
            field="migration_state",
        )
    return state


def deployment_record(
    *,
    actor: Any,
    service: str,
    environment: Any,
    version: str,
    artifact: str = "",
    migration_state: dict | None = None,
) -> Deployment:
    """Record a deployment; the live one of the service becomes its previous.

    ``migration_state`` is captured from the databases when None: record the
    deployment before running ``migrate`` so it holds the state to go back to.
    """
    from rollback.actuators.migration_revert import migration_state_capture

    service, version = (service or "").strip(), (version or "").strip()
    if not service:
        raise InvalidInput("service is required", field="service")
    if not version:
        raise InvalidInput("version is required", field="version")
    env = _environment(environment)
    state = (
        migration_state_capture()
        if migration_state is None
        else _check_migration_state(migration_state)
    )
    who = as_actor(actor)
    with audited_transaction():
        previous = (
            Deployment.objects.select_for_update()
            .filter(service=service, environment=env, status=DeploymentStatus.LIVE)
            .order_by("-deployed_at", "-id")
            .first()
        )
        deployment = Deployment(
            service=service,
            environment=env,
            version=version,
            artifact=artifact or "",
            previous=previous,
            migration_state=state,
            recorded_by=str(who)[:200],
        )
        try:
            deployment.full_clean()
        except Exception as exc:  # ValidationError: field-level message
            messages = getattr(exc, "message_dict", {}) or {"deployment": [str(exc)]}
            field, errors = next(iter(messages.items()))
            raise InvalidInput(f"{field}: {errors[0]}", field=field) from None
        deployment.save()
        if previous is not None:
            Deployment.objects.filter(pk=previous.pk).update(
                status=DeploymentStatus.SUPERSEDED
            )
        record_audit_event(
            actor=who,
            action="deployment.recorded",
            target=deployment,
            environment=env.key,
            after=_snapshot(deployment),
            details={"previous_version": previous.version if previous else None},
        )
    return deployment


def deployment_mark_reverted(
    *, actor: Any, deployment_id: int, run_id: int | None = None
) -> Deployment:
    """Mark a deployment reverted and its previous one live. Idempotent.

    Called by the run service in the transaction that records the successful
    deployment-revert step, so the records say what really runs.
    """
    with audited_transaction():
        deployment = (
            Deployment.objects.select_for_update()
            .select_related("environment")
            .get(pk=deployment_id)
        )
        if deployment.status == DeploymentStatus.REVERTED:
            return deployment
        before = _snapshot(deployment)
        deployment.status = DeploymentStatus.REVERTED
        deployment.save(update_fields=["status", "updated_at"])
        previous_version = None
        if deployment.previous_id:
            previous = Deployment.objects.select_for_update().get(
                pk=deployment.previous_id
            )
            previous.status = DeploymentStatus.LIVE
            previous.save(update_fields=["status", "updated_at"])
            previous_version = previous.version
        record_audit_event(
            actor=actor,
            action="deployment.reverted",
            target=deployment,
            environment=deployment.environment.key,
            before=before,
            after=_snapshot(deployment),
            details={
                "live_again": deployment.previous_id,
                "live_version": previous_version,
                "run": run_id,
            },
        )
    return deployment
