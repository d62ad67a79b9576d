"""A rolling-back rollout: finish it once its rollback run has ended.

``rollback_ended`` tells the decision step whether there is anything to
do, ``rollback_progress`` marks the rollout rolled back (or its rollback
failed) under the decision's locks, and ``rollback_nudge`` queues a run
that has not started within ``ROLLBACK_REQUEUE_SECONDS`` again.
"""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from canary.models import Rollout
from canary.services import rollout_rollback_finished
from controlplane.audit.actors import CONTROLLER

logger = logging.getLogger(__name__)

# A rollback run still pending this long after creation is queued again.
ROLLBACK_REQUEUE_SECONDS = 3.0


def _rollout_run(rollout: Rollout) -> Any:
    from rollback.models import RollbackRun, Trigger

    return (
        RollbackRun.objects.filter(trigger=Trigger.ROLLOUT, trigger_ref=str(rollout.pk))
        .order_by("-id")
        .first()
    )


def rollback_ended(rollout: Rollout) -> bool:
    from rollback.models import RunStatus

    run = _rollout_run(rollout)
    return run is not None and run.status in (RunStatus.SUCCEEDED, RunStatus.FAILED)


def rollback_nudge(rollout: Rollout) -> None:
    """Queue the rollout's rollback run again if it has not started within
    ``ROLLBACK_REQUEUE_SECONDS``: a lost task message must not leave the
    flag unrestored until the reaper's next pass. A duplicate delivery is a
    no-op (steps are claimed)."""
    from rollback.models import RunStatus
    from rollback.services import rollback_run_queue

    run = _rollout_run(rollout)
    if run is None or run.status != RunStatus.PENDING:
        return
    # Wall time, not canary.clock: created_at is the database's auto_now_add.
    if (timezone.now() - run.created_at).total_seconds() < ROLLBACK_REQUEUE_SECONDS:
        return
    try:
        rollback_run_queue(run_id=run.pk)
        logger.warning(
            "rollout %s: rollback run %s had not started; queued again",
            rollout.pk,
            run.pk,
        )
    except Exception as exc:  # the beat's reaper remains
        logger.warning(
            "rollout %s: rollback run %s not queued again: %s", rollout.pk, run.pk, exc
        )


def rollback_progress(rollout: Rollout) -> dict | None:
    """Mark a rolling-back rollout rolled back once its rollback run ended."""
    from controlplane.audit.models import AuditEvent
    from rollback.models import RunStatus

    run = _rollout_run(rollout)
    if run is None or run.status in (RunStatus.PENDING, RunStatus.RUNNING):
        return None
    details = {"rollback_run": run.pk, "level": run.level, "run_status": run.status}
    if run.status == RunStatus.SUCCEEDED:
        reason = f"rollback run {run.pk} (level {run.level}) succeeded"
        rollout_rollback_finished(
            rollout_id=rollout.pk,
            actor=CONTROLLER,
            succeeded=True,
            reason=reason,
            details=details,
        )
        return {"rollout": rollout.pk, "action": "rolled_back", "reason": reason}
    already = AuditEvent.objects.filter(
        action="rollout.rollback_failed",
        target_id=str(rollout.pk),
        details__rollback_run=run.pk,
    ).exists()
    if already:
        return None
    reason = f"rollback run {run.pk} (level {run.level}) failed: {run.error}"
    rollout_rollback_finished(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        succeeded=False,
        reason=reason,
        details=details,
    )
    return {"rollout": rollout.pk, "action": "rollback_failed", "reason": reason}
