"""Pipelines: one rollout or release run environment after environment.

``pipeline_create`` makes every stage's draft at once (a rollout for one
flag, a release for several), so the whole plan is checked before anything
starts. ``pipeline_start`` starts stage 0; each later stage starts from
``pipeline_stage_start_task`` once the stage before it completed, and, with
``requires_approval``, once someone other than the creator approved
(``pipeline_approve``). ``pipeline_stage_finished`` is the hook a stage's
rollout (``rollout_transition``) or release (``release_sync``) calls, in
the transaction that ended it. The functions here are the only code that
assigns ``Pipeline.status``; every change writes one ``pipeline.*`` audit
event. Reads (get, list, evidence) are in ``canary.services.pipeline_reads``.
"""

from __future__ import annotations

from typing import Any

from canary import clock
from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import Pipeline, PipelineStage, PipelineStatus
from canary.services._common import known_fields_object
from canary.services.pipeline_flow import (
    abort_drafts,
    lock_pipeline,
    mark_started,
    note_pending,
    pipeline_pending_change,
    pipeline_stage_finished,
    pipeline_stage_start,
    queue_stage_start,
    save_pipeline,
    start_target,
)
from canary.services.pipeline_reads import (
    pipeline_evidence,
    pipeline_get,
    pipeline_list,
    pipeline_stages,
)
from controlplane.audit.actors import as_actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import DomainError
from flags import selectors as flag_selectors
from flags.models import Environment

MAX_STAGES = 5
STAGE_FIELDS = frozenset(
    {
        "environment",
        "template",
        "pilot_merchants",
        "duration_scale",
        "checks",
        "check_template",
        "phase_overrides",
    }
)

__all__ = [
    "pipeline_abort",
    "pipeline_approve",
    "pipeline_create",
    "pipeline_evidence",
    "pipeline_get",
    "pipeline_list",
    "pipeline_pending_change",
    "pipeline_stage_finished",
    "pipeline_stage_start",
    "pipeline_stages",
    "pipeline_start",
]


def _actor_text(actor: Any) -> str:
    who = as_actor(actor)
    return f"{who.type}:{who.name}"[:150]


def _prefixed(exc: DomainError, prefix: str) -> DomainError:
    """Return ``exc`` with its field under ``prefix`` (``stages[1].template``)."""
    exc.field = f"{prefix}.{exc.field}" if exc.field else prefix
    return exc


def _stages_clean(stages: Any) -> list[tuple[Environment, dict]]:
    if not isinstance(stages, (list, tuple)):
        raise InvalidInput("give the stages as a list", field="stages")
    if len(stages) < 2:
        raise InvalidInput(
            "a pipeline has at least two stages (one stage is a rollout)",
            field="stages",
        )
    if len(stages) > MAX_STAGES:
        raise InvalidInput(f"at most {MAX_STAGES} stages", field="stages")
    clean: list[tuple[Environment, dict]] = []
    seen: set[str] = set()
    for index, raw in enumerate(stages):
        prefix = f"stages[{index}]"
        known_fields_object(raw, STAGE_FIELDS, prefix)
        key = raw.get("environment")
        if not isinstance(key, str) or not key:
            raise InvalidInput(
                "must be an environment key", field=f"{prefix}.environment"
            )
        if key in seen:
            raise InvalidInput(
                f"{key!r} is already an earlier stage's environment",
                field=f"{prefix}.environment",
            )
        seen.add(key)
        environment = Environment.objects.filter(key=key).first()
        if environment is None:
            raise NotFound(
                f"unknown environment {key!r}", field=f"{prefix}.environment"
            )
        if not isinstance(raw.get("template"), str) or not raw["template"]:
            raise InvalidInput("must be a plan name", field=f"{prefix}.template")
        clean.append((environment, dict(raw)))
    return clean


def _flags_clean(flag: Any, flags: Any) -> tuple[str, list[str]]:
    """Return ``("rollout", [key])`` or ``("release", [keys])``."""
    if (flag is None) == (flags is None):
        raise InvalidInput(
            "give either flag (one flag) or flags (several)", field="flag"
        )
    if flag is not None:
        key = getattr(flag, "key", flag)
        if not isinstance(key, str) or not key:
            raise InvalidInput("must be a flag key", field="flag")
        try:
            flag_selectors.flag_get(key)
        except NotFound:
            raise NotFound(f"unknown flag {key!r}", field="flag") from None
        return "rollout", [key]
    if not isinstance(flags, (list, tuple)) or len(flags) < 2:
        raise InvalidInput(
            "list at least two flags (one flag: give flag)", field="flags"
        )
    keys = [getattr(item, "key", item) for item in flags]
    for index, key in enumerate(keys):
        if not isinstance(key, str) or not key:
            raise InvalidInput("must be a flag key", field=f"flags[{index}]")
        try:
            flag_selectors.flag_get(key)
        except NotFound:
            raise NotFound(f"unknown flag {key!r}", field=f"flags[{index}]") from None
    return "release", keys


def _stage_target(
    *, actor: Any, kind: str, keys: list[str], environment: Environment, spec: dict
) -> dict:
    from canary.services.releases import release_create
    from canary.services.templates import rollout_create_from_template

    options = {
        "template": spec["template"],
        "pilot_merchants": spec.get("pilot_merchants"),
        "duration_scale": spec.get("duration_scale"),
        "checks": spec.get("checks"),
        "check_template": spec.get("check_template"),
        "phase_overrides": spec.get("phase_overrides"),
        "name": spec.get("name"),
    }
    if kind == "rollout":
        rollout = rollout_create_from_template(
            actor=actor,
            flag=flag_selectors.flag_get(keys[0]),
            environment=environment,
            **options,
        )
        return {"rollout": rollout}
    release = release_create(
        actor=actor, environment=environment, flags=keys, **options
    )
    return {"release": release}


def pipeline_create(
    *,
    actor: Any,
    name: str = "",
    flag: Any = None,
    flags: Any = None,
    stages: Any,
    requires_approval: bool = False,
) -> Pipeline:
    """Create a draft pipeline and every stage's draft rollout or release.

    ``flag`` (one key) makes each stage a rollout
    (``rollout_create_from_template``); ``flags`` (two or more keys) makes
    each a release (``release_create``). ``stages`` lists, in order,
    ``{"environment", "template", "pilot_merchants"?, "duration_scale"?,
    "checks"?, "check_template"?, "phase_overrides"?}``. Raise
    InvalidInput (fewer than two stages, an environment twice, a bad
    field), NotFound (unknown environment or flag), each with its field
    (``stages[1].environment``), and whatever creating a stage's draft
    raises, its field under ``stages[i]``; nothing is created then.
    Writes ``pipeline.created`` (plus each draft's own events).
    """
    kind, keys = _flags_clean(flag, flags)
    clean = _stages_clean(stages)
    if not isinstance(requires_approval, bool):
        raise InvalidInput("must be true or false", field="requires_approval")
    name = (name or "").strip() or (
        f"{' + '.join(keys)}: {' -> '.join(env.key for env, _ in clean)}"
    )
    if len(name) > 200:
        raise InvalidInput("at most 200 characters", field="name")
    with audited_transaction():
        pipeline = Pipeline.objects.create(
            name=name,
            requires_approval=requires_approval,
            created_by=_actor_text(actor),
        )
        created = []
        for index, (environment, spec) in enumerate(clean):
            spec.setdefault("name", f"{name} [{environment.key}]"[:200])
            try:
                target = _stage_target(
                    actor=actor,
                    kind=kind,
                    keys=keys,
                    environment=environment,
                    spec=spec,
                )
            except DomainError as exc:
                raise _prefixed(exc, f"stages[{index}]") from None
            PipelineStage.objects.create(
                pipeline=pipeline, index=index, environment=environment, **target
            )
            created.append(
                {
                    "index": index,
                    "environment": environment.key,
                    "template": spec["template"],
                    kind: next(iter(target.values())).pk,
                }
            )
        record_audit_event(
            actor=actor,
            action="pipeline.created",
            target=pipeline,
            after={
                "name": name,
                "kind": kind,
                "flags": keys,
                "requires_approval": requires_approval,
                "stages": created,
            },
        )
    return pipeline


def pipeline_start(*, pipeline_id: Any, actor: Any, reason: str = "") -> Pipeline:
    """Start a draft pipeline: stage 0's preflight, then its start.

    A refused preflight raises PreflightFailed (409, with the report) and
    leaves the pipeline a draft. Where stage 0's environment asks approvals
    for rollout starts, a change request is created instead
    (``pipeline.stage_awaiting_change_request``) and the pipeline starts
    when it is applied; so does a later stage. A running pipeline whose
    current stage never started (its start task was lost) starts that
    stage now;
    otherwise a running one is returned unchanged. Raise Conflict when
    awaiting approval or finished. Writes ``pipeline.started`` (or
    ``pipeline.stage_started`` for the restart).
    """
    pipeline = pipeline_get(pipeline_id)
    if pipeline.status == PipelineStatus.AWAITING_APPROVAL:
        raise Conflict(
            f"pipeline {pipeline.pk} awaits approval for stage "
            f"{pipeline.current_stage + 1}: approve it",
            field="status",
        )
    if pipeline.status not in (PipelineStatus.DRAFT, PipelineStatus.RUNNING):
        raise Conflict(f"pipeline {pipeline.pk} is {pipeline.status}", field="status")
    stage = pipeline_stages(pipeline)[pipeline.current_stage]
    if stage.started_at is not None:
        return pipeline
    reason = reason or f"pipeline {pipeline.pk} stage {stage.index + 1}"
    outcome = start_target(stage, actor, reason)
    if outcome.is_pending:
        # the stage's environment asks approvals for rollout starts: the
        # stage (and a draft pipeline) starts when the request is applied
        return note_pending(pipeline.pk, stage, actor, outcome.change_request)
    action = (
        "pipeline.started"
        if pipeline.status == PipelineStatus.DRAFT
        else "pipeline.stage_started"
    )
    mark_started(pipeline.pk, stage, actor, action, reason)
    return pipeline_get(pipeline.pk)


# -- operators ----------------------------------------------------------------


def pipeline_approve(*, pipeline_id: Any, actor: Any, reason: str = "") -> Pipeline:
    """Approve starting the next stage of a pipeline awaiting approval.

    Four eyes: a person may not approve a pipeline they created (Conflict,
    field ``approved_by``). Not awaiting approval: Conflict. Writes
    ``pipeline.approved`` and queues the stage's start after commit.
    """
    pipeline = pipeline_get(pipeline_id)
    who = as_actor(actor)
    with audited_transaction():
        pipeline = lock_pipeline(pipeline.pk)
        if pipeline.status != PipelineStatus.AWAITING_APPROVAL:
            raise Conflict(
                f"pipeline {pipeline.pk} is {pipeline.status}, not awaiting approval",
                field="status",
            )
        if who.type == "user" and _actor_text(who) == pipeline.created_by:
            raise Conflict(
                "the creator of a pipeline cannot approve it: another person must",
                field="approved_by",
            )
        pipeline.status = PipelineStatus.RUNNING
        pipeline.approved_by = _actor_text(who)
        pipeline.approved_at = clock.now()
        save_pipeline(pipeline, "status", "approved_by", "approved_at")
        record_audit_event(
            actor=actor,
            action="pipeline.approved",
            target=pipeline,
            before={"status": PipelineStatus.AWAITING_APPROVAL},
            after={"status": pipeline.status, "stage": pipeline.current_stage},
            details={"reason": reason, "stage": pipeline.current_stage},
        )
        queue_stage_start(pipeline.pk, pipeline.current_stage)
    return pipeline


def pipeline_abort(*, pipeline_id: Any, actor: Any, reason: str = "") -> Pipeline:
    """Abort the pipeline: its running stage and every draft are aborted.

    Each aborted rollout puts its flag back as captured at start. Already
    aborted: unchanged. Completed or failed: Conflict. Writes
    ``pipeline.aborted``.
    """
    reason = reason or "aborted by an operator"
    pipeline = pipeline_get(pipeline_id)
    with audited_transaction():
        pipeline = lock_pipeline(pipeline.pk)
        if pipeline.status == PipelineStatus.ABORTED:
            return pipeline
        if pipeline.is_terminal:
            raise Conflict(
                f"pipeline {pipeline.pk} is {pipeline.status}", field="status"
            )
        before = pipeline.status
        pipeline.status = PipelineStatus.ABORTED
        pipeline.finished_at = clock.now()
        pipeline.summary = {**(pipeline.summary or {}), "reason": reason}
        save_pipeline(pipeline, "status", "finished_at", "summary")
        aborted = abort_drafts(pipeline, actor, f"pipeline {pipeline.pk}: {reason}")
        record_audit_event(
            actor=actor,
            action="pipeline.aborted",
            target=pipeline,
            before={"status": before},
            after={"status": PipelineStatus.ABORTED},
            details={"reason": reason, "aborted_stages": aborted},
        )
    return pipeline
