"""How a pipeline moves from stage to stage (``canary.services.pipelines``
holds the operators' entry points and re-exports these).

``pipeline_stage_finished`` is the hook a stage's rollout or release calls
in the transaction that ended it; ``pipeline_stage_start`` is the body of
``pipeline_stage_start_task``, queued after that transaction committed.
"""

from __future__ import annotations

import logging
from typing import Any

from django.db import transaction

from canary import clock
from canary.exceptions import NotFound
from canary.models import (
    Pipeline,
    PipelineStage,
    PipelineStatus,
    Release,
    ReleaseStatus,
    Rollout,
)
from canary.services._common import Status
from canary.services.pipeline_reads import (
    pipeline_evidence,
    pipeline_get,
    pipeline_stages,
)
from canary.transitions import ACTIVE
from controlplane.audit.actors import CONTROLLER
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import DomainError

logger = logging.getLogger(__name__)

# A rollout that reached one of these failed its stage: the outcome is
# decided (a rollback only goes on to rolled back), so the pipeline fails
# at once rather than waiting for the rollback run to end.
_ROLLOUT_FAILED = frozenset({Status.ROLLING_BACK, Status.ROLLED_BACK, Status.ABORTED})


def _start_operation(stage: PipelineStage) -> tuple[str, dict]:
    """Return the change operation that starts ``stage`` and its target."""
    if stage.rollout_id is not None:
        return "rollout.start", {"rollout": stage.rollout_id}
    return "release.start", {"release": stage.release_id}


def start_target(stage: PipelineStage, actor: Any, reason: str) -> Any:
    """Start the stage's rollout or release through the four-eyes gate of
    the stage's environment (no transaction open); return the gate's
    ``Submission``.

    Where the policy asks approvals for rollout starts, a change request
    is created instead and nothing starts: the stage starts when the
    request is applied (``gated_rollout_start``). Otherwise the preflight
    runs and the target starts now.
    """
    from flags.changes import gate

    operation, arguments = _start_operation(stage)
    if stage.rollout_id is not None:
        from canary.services.operator import rollout_start_checked

        def start() -> Any:
            return rollout_start_checked(
                rollout_id=stage.rollout_id, actor=actor, reason=reason
            )[0]
    else:
        from canary.services.releases import release_start

        def start() -> Any:
            return release_start(
                release_id=stage.release_id, actor=actor, reason=reason
            )

    return gate.submit(
        actor=actor,
        operation=operation,
        arguments={**arguments, "reason": reason},
        reason=reason,
        apply=start,
    )


def pending_change(stage: PipelineStage) -> Any:
    """Return the pending change request that would start ``stage``, or None."""
    from flags.changes.models import ChangeRequest, ChangeRequestStatus
    from flags.changes.operations import operation_get, target_of

    operation, arguments = _start_operation(stage)
    return (
        ChangeRequest.objects.filter(
            operation=operation,
            target=target_of(operation_get(operation), arguments),
            status=ChangeRequestStatus.PENDING,
        )
        .order_by("-pk")
        .first()
    )


def pipeline_pending_change(pipeline: Pipeline) -> Any:
    """Return the pending change request its current stage waits for to
    start, or None (started, or not gated)."""
    stages = pipeline_stages(pipeline)
    if pipeline.is_terminal or not 0 <= pipeline.current_stage < len(stages):
        return None
    stage = stages[pipeline.current_stage]
    return None if stage.started_at is not None else pending_change(stage)


def note_pending(
    pipeline_id: int, stage: PipelineStage, actor: Any, change: Any
) -> Pipeline:
    """Record that ``stage`` waits for change request ``change``."""
    with audited_transaction():
        pipeline = lock_pipeline(pipeline_id)
        record_audit_event(
            actor=actor,
            action="pipeline.stage_awaiting_change_request",
            target=pipeline,
            details={
                "stage": _stage_info(stage),
                "change_request": change.pk,
                "required_approvals": change.required_approvals,
            },
        )
    return pipeline_get(pipeline_id)


def _stage_of(*, rollout_id: int | None, release_id: int | None) -> Any:
    stages = PipelineStage.objects.select_related("environment", "pipeline")
    if rollout_id is not None:
        return stages.filter(rollout_id=rollout_id).first()
    return stages.filter(release_id=release_id).first()


def target_started(
    *, actor: Any, rollout_id: int | None = None, release_id: int | None = None
) -> Pipeline | None:
    """A stage's target started outside the pipeline's own start (an applied
    change request, a scheduled start): record the stage started when it
    is the pipeline's current one."""
    stage = _stage_of(rollout_id=rollout_id, release_id=release_id)
    if stage is None or stage.started_at is not None:
        return None
    pipeline = stage.pipeline
    if pipeline.is_terminal or pipeline.current_stage != stage.index:
        return None
    action = (
        "pipeline.started"
        if pipeline.status == PipelineStatus.DRAFT
        else "pipeline.stage_started"
    )
    reason = f"pipeline {pipeline.pk}: stage {stage.index + 1} started by its change"
    return mark_started(pipeline.pk, stage, actor, action, reason)


def target_start_refused(
    *,
    actor: Any,
    error: DomainError,
    rollout_id: int | None = None,
    release_id: int | None = None,
) -> None:
    """A stage's gated start was refused when applied: fail its pipeline, as
    the pipeline's own start would have."""
    stage = _stage_of(rollout_id=rollout_id, release_id=release_id)
    if stage is None or stage.started_at is not None:
        return
    with audited_transaction():
        pipeline = lock_pipeline(stage.pipeline_id)
        if pipeline.is_terminal or pipeline.current_stage != stage.index:
            return
        _fail_start(pipeline, stage, actor, error)


def _fail_start(
    pipeline: Pipeline, stage: PipelineStage, actor: Any, error: DomainError
) -> None:
    """Fail the locked ``pipeline``: ``stage`` did not start (with the
    preflight's problems when that refused it)."""
    from canary.services.operator import PreflightFailed

    problems = error.report.problems if isinstance(error, PreflightFailed) else []
    _fail(
        pipeline,
        actor=actor,
        reason=f"stage {stage.index + 1} ({stage.environment.key}) did not start: "
        f"{error.message}",
        details={"stage": _stage_info(stage), "problems": problems},
    )


def _gated(start: Any, key: str, arguments: dict) -> Any:
    """Call ``start`` (a gated or scheduled start of the target
    ``arguments[key]``), then move the pipeline whose stage it is."""
    target = {key: arguments[key]}
    actor = arguments["actor"]
    try:
        result = start(**arguments)
    except DomainError as error:
        target_start_refused(actor=actor, error=error, **target)
        raise
    target_started(actor=actor, **target)
    return result


def gated_rollout_start(**arguments: Any) -> Any:
    """``rollout_start_checked`` for gated and scheduled starts
    (flags.changes), which also moves a pipeline whose stage it starts."""
    from canary.services.operator import rollout_start_checked

    return _gated(rollout_start_checked, "rollout_id", arguments)


def gated_release_start(**arguments: Any) -> Any:
    """``release_start`` for gated and scheduled starts, the same way."""
    from canary.services.releases import release_start

    return _gated(release_start, "release_id", arguments)


def lock_pipeline(pipeline_id: int) -> Pipeline:
    pipeline = Pipeline.objects.select_for_update().filter(pk=pipeline_id).first()
    if pipeline is None:
        raise NotFound(f"unknown pipeline {pipeline_id}", field="pipeline")
    return pipeline


def save_pipeline(pipeline: Pipeline, *fields: str) -> None:
    pipeline.version += 1
    pipeline.save(update_fields=["version", *fields])


def _stage_info(stage: PipelineStage) -> dict:
    return {
        "index": stage.index,
        "environment": stage.environment.key,
        "kind": stage.kind,
        "target": stage.rollout_id or stage.release_id,
    }


def mark_started(
    pipeline_id: int, stage: PipelineStage, actor: Any, action: str, reason: str
) -> Pipeline | None:
    """Record that ``stage`` started; None when it was already recorded.

    A pipeline that ended while the stage's preflight ran (aborted by an
    operator) keeps no stage running: the stage just started is aborted.
    """
    with audited_transaction():
        pipeline = lock_pipeline(pipeline_id)
        row = PipelineStage.objects.select_for_update().get(pk=stage.pk)
        if row.started_at is not None:
            return None
        if pipeline.is_terminal:
            abort_drafts(
                pipeline, actor, f"pipeline {pipeline.pk} is {pipeline.status}"
            )
            return None
        now = clock.now()
        row.started_at = now
        row.save(update_fields=["started_at"])
        before = pipeline.status
        fields = ["current_stage"]
        pipeline.current_stage = stage.index
        if pipeline.status == PipelineStatus.DRAFT:
            pipeline.status = PipelineStatus.RUNNING
            pipeline.started_at = now
            fields += ["status", "started_at"]
        save_pipeline(pipeline, *fields)
        record_audit_event(
            actor=actor,
            action=action,
            target=pipeline,
            before={"status": before},
            after={"status": pipeline.status, "stage": stage.index},
            details={"reason": reason, "stage": _stage_info(stage)},
        )
    return pipeline


def pipeline_stage_start(
    *, pipeline_id: int, stage_index: int, actor: Any = CONTROLLER
) -> Pipeline | None:
    """Start stage ``stage_index`` of a running pipeline (the task's body).

    Keyed by the stage index: when the pipeline is not running that stage,
    or the stage already started (a redelivery), do nothing and return
    None. A refused preflight, or any refusal to start, fails the pipeline
    with the reason and the preflight's problems (``pipeline.failed``),
    never an exception. Writes ``pipeline.stage_started``.
    """
    pipeline = Pipeline.objects.filter(pk=pipeline_id).first()
    if (
        pipeline is None
        or pipeline.status != PipelineStatus.RUNNING
        or pipeline.current_stage != stage_index
    ):
        return None
    stage = pipeline_stages(pipeline)[stage_index]
    if stage.started_at is not None or pending_change(stage) is not None:
        return None  # a redelivery
    reason = f"pipeline {pipeline.pk}: stage {stage_index} completed"
    try:
        outcome = start_target(stage, actor, reason)
    except DomainError as exc:
        with audited_transaction():
            locked = lock_pipeline(pipeline.pk)
            if locked.is_terminal:
                return locked
            _fail_start(locked, stage, actor, exc)
        return pipeline_get(pipeline.pk)
    if outcome.is_pending:
        return note_pending(pipeline.pk, stage, actor, outcome.change_request)
    return mark_started(pipeline.pk, stage, actor, "pipeline.stage_started", reason)


def queue_stage_start(pipeline_id: int, stage_index: int) -> None:
    """Queue the next stage's start once the transaction committed.

    The start runs a preflight that reads outcome events and calls check
    providers: never inside the transaction that finished the stage.
    """

    def queue() -> None:
        from canary.tasks import pipeline_stage_start_task

        try:
            pipeline_stage_start_task.delay(
                pipeline_id=pipeline_id, stage_index=stage_index
            )
        except Exception as exc:  # a lost start is recovered by pipeline start
            logger.warning(
                "pipeline %s: stage %s start not queued: %s",
                pipeline_id,
                stage_index,
                exc,
            )

    transaction.on_commit(queue)


# -- ends of stages -----------------------------------------------------------


def _stage_failure(stage: PipelineStage, target: Any) -> str | None:
    """Return why the finished stage failed, None when it completed."""
    if isinstance(target, Rollout):
        if target.status in _ROLLOUT_FAILED:
            return f"its rollout {target.pk} is {target.status}"
        return None
    if target.status != ReleaseStatus.COMPLETED:
        return f"its release {target.pk} is {target.status}"
    # A partly rolled-back release deployed some features only: the next
    # environment would get the features this one rolled back.
    rolled = [e["flag"] for e in (target.summary or {}).get("rolled_back") or []]
    if rolled:
        return f"its release {target.pk} rolled back {', '.join(rolled)}"
    return None


def abort_drafts(pipeline: Pipeline, actor: Any, reason: str) -> list[int]:
    """Abort every stage target not started or still active; return indexes."""
    from canary.services.releases import release_abort
    from canary.services.rollout_moves import rollout_abort

    aborted = []
    for stage in pipeline_stages(pipeline):
        target = stage.target
        if isinstance(target, Rollout) and target.status in ACTIVE | {Status.DRAFT}:
            rollout_abort(rollout_id=target.pk, actor=actor, reason=reason)
            aborted.append(stage.index)
        elif isinstance(target, Release) and not target.is_terminal:
            release_abort(release_id=target.pk, actor=actor, reason=reason)
            aborted.append(stage.index)
    return aborted


def _fail(pipeline: Pipeline, *, actor: Any, reason: str, details: dict) -> None:
    """Fail the locked ``pipeline`` and abort its later stages' drafts."""
    before = pipeline.status
    pipeline.status = PipelineStatus.FAILED
    pipeline.finished_at = clock.now()
    pipeline.summary = {**(pipeline.summary or {}), "reason": reason}
    save_pipeline(pipeline, "status", "finished_at", "summary")
    # The status is failed before the drafts are aborted: their own end
    # reaches pipeline_stage_finished, which leaves a finished pipeline be.
    aborted = abort_drafts(pipeline, actor, f"pipeline {pipeline.pk} failed")
    record_audit_event(
        actor=actor,
        action="pipeline.failed",
        target=pipeline,
        before={"status": before},
        after={"status": PipelineStatus.FAILED},
        details={"reason": reason, "aborted_stages": aborted, **details},
    )


def pipeline_stage_finished(
    *, actor: Any, rollout_id: int | None = None, release_id: int | None = None
) -> Pipeline | None:
    """Move the pipeline on when a stage's rollout or release ended.

    Called inside the transaction that ended it (``rollout_transition``,
    ``release_sync``); not a stage, or a pipeline already finished: None.
    Completed and a next stage: ``pipeline.awaiting_approval`` when the
    pipeline requires approval, else ``pipeline.stage_completed`` and the
    next stage's start queued after commit. The last stage completed:
    ``pipeline.completed`` with each stage's summary. Rolled back (or
    rolling back), aborted, or a release that rolled a feature back:
    ``pipeline.failed`` with the reason, later stages' drafts aborted.
    """
    stages = PipelineStage.objects.select_related("environment")
    if rollout_id is not None:
        stage = stages.filter(rollout_id=rollout_id).first()
    else:
        stage = stages.filter(release_id=release_id).first()
    if stage is None:
        return None
    pipeline = lock_pipeline(stage.pipeline_id)
    if pipeline.is_terminal:
        return pipeline
    target = (
        Rollout.objects.get(pk=rollout_id)
        if rollout_id is not None
        else Release.objects.get(pk=release_id)
    )
    failure = _stage_failure(stage, target)
    if failure is not None:
        _fail(
            pipeline,
            actor=actor,
            reason=f"stage {stage.index + 1} ({stage.environment.key}) failed: "
            f"{failure}",
            details={"stage": _stage_info(stage)},
        )
        return pipeline
    if stage.index != pipeline.current_stage:
        return pipeline  # completed out of turn (started by hand): the start decides
    count = PipelineStage.objects.filter(pipeline=pipeline).count()
    done = {**_stage_info(stage), "status": target.status}
    summary = dict(pipeline.summary or {})
    summary["stages"] = [*summary.get("stages", []), done]
    pipeline.summary = summary
    before = pipeline.status
    if stage.index == count - 1:
        pipeline.status = PipelineStatus.COMPLETED
        pipeline.finished_at = clock.now()
        save_pipeline(pipeline, "status", "finished_at", "summary")
        record_audit_event(
            actor=actor,
            action="pipeline.completed",
            target=pipeline,
            before={"status": before},
            after={"status": pipeline.status},
            details={
                "stages": summary["stages"],
                "evidence": pipeline_evidence(pipeline),
            },
        )
        return pipeline
    pipeline.current_stage = stage.index + 1
    fields = ["current_stage", "summary"]
    if pipeline.requires_approval:
        pipeline.status = PipelineStatus.AWAITING_APPROVAL
        fields.append("status")
    save_pipeline(pipeline, *fields)
    record_audit_event(
        actor=actor,
        action=(
            "pipeline.awaiting_approval"
            if pipeline.requires_approval
            else "pipeline.stage_completed"
        ),
        target=pipeline,
        before={"status": before, "stage": stage.index},
        after={"status": pipeline.status, "stage": pipeline.current_stage},
        details={"completed": done},
    )
    if not pipeline.requires_approval:
        queue_stage_start(pipeline.pk, pipeline.current_stage)
    return pipeline
