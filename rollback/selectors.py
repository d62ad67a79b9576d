"""Reads shared by the API, admin, commands, services and tasks."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from controlplane.exceptions import InvalidInput, NotFound
from rollback.models import Deployment, RollbackRun


def _as_id(value: Any, what: str, field: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidInput(
            f"{what} id must be an integer, not {value!r}", field=field
        ) from None
    if number < 1:
        raise InvalidInput(f"{what} id must be positive, not {value!r}", field=field)
    return number


def deployment_get(deployment_id: Any) -> Deployment:
    """Return the deployment; raise NotFound (or InvalidInput for a bad id)."""
    if isinstance(deployment_id, Deployment):
        return deployment_id
    pk = _as_id(deployment_id, "deployment", "deployment")
    found = (
        Deployment.objects.select_related("environment", "previous")
        .filter(pk=pk)
        .first()
    )
    if found is None:
        raise NotFound(f"deployment {pk} does not exist", field="deployment")
    return found


def deployment_list(
    *, service: str | None = None, environment: str | None = None
) -> QuerySet[Deployment]:
    """Return deployments, newest first, optionally for one service/environment."""
    qs = Deployment.objects.select_related("environment", "previous")
    if service:
        qs = qs.filter(service=service)
    if environment:
        qs = qs.filter(environment__key=environment)
    return qs.order_by("-deployed_at", "-id")


def rollback_run_get(run_id: Any) -> RollbackRun:
    """Return the run; raise NotFound (or InvalidInput for a bad id)."""
    pk = _as_id(run_id, "rollback run", "run")
    found = RollbackRun.objects.select_related("deployment").filter(pk=pk).first()
    if found is None:
        raise NotFound(f"rollback run {pk} does not exist", field="run")
    return found


def rollback_run_list() -> QuerySet[RollbackRun]:
    """Return rollback runs, newest first."""
    return RollbackRun.objects.select_related("deployment").order_by(
        "-created_at", "-id"
    )
