"""Celery tasks of the rollback app: they take ids and call the executor."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def rollback_run_execute_task(run_id: int) -> None:
    """Execute a run's remaining steps; queue itself again when a retry is due."""
    from rollback.executor import rollback_run_execute

    delay = rollback_run_execute(run_id=run_id)
    if delay is not None:
        rollback_run_execute_task.apply_async(
            kwargs={"run_id": run_id}, countdown=delay
        )


@shared_task(acks_late=True)
def rollback_runs_resume_task() -> list[int]:
    """Reaper: queue runs whose step lease expired or that made no progress.

    Run by beat every few seconds (controlplane/settings.py); claims make an
    extra delivery safe.
    """
    from controlplane.conf import setting
    from rollback.services import rollback_runs_resume

    return rollback_runs_resume(
        stale_after_seconds=float(setting("ROLLBACK_RUN_STALE_SECONDS"))
    )
