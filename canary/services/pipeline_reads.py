"""Reads of pipelines shared by the API, the admin, the command and the
services: get, list, stages, and each stage's evidence."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from canary.exceptions import InvalidInput, NotFound
from canary.models import Pipeline, PipelineStage, PipelineStatus, Rollout

_ESTIMATE_KEYS = ("estimate", "lower", "upper", "margin")


def pipeline_get(pipeline_id: Any) -> Pipeline:
    """Return the pipeline (InvalidInput for a non-id, NotFound, field
    ``pipeline``)."""
    try:
        pk = int(str(pipeline_id).strip())
    except ValueError:
        raise InvalidInput(
            f"{pipeline_id!r} is not a pipeline id", field="pipeline"
        ) from None
    pipeline = Pipeline.objects.filter(pk=pk).first()
    if pipeline is None:
        raise NotFound(f"unknown pipeline {pk}", field="pipeline")
    return pipeline


def pipeline_list(*, status: str | None = None) -> QuerySet[Pipeline]:
    """Return pipelines newest first, optionally of one status
    (InvalidInput, field ``status``, for an unknown one)."""
    pipelines = Pipeline.objects.order_by("-id")
    if status:
        if status not in PipelineStatus.values:
            raise InvalidInput(
                f"must be one of {', '.join(PipelineStatus.values)}", field="status"
            )
        pipelines = pipelines.filter(status=status)
    return pipelines


def pipeline_stages(pipeline: Pipeline) -> list[PipelineStage]:
    """Return the stages in order, with their environment and target."""
    return list(
        PipelineStage.objects.filter(pipeline=pipeline)
        .select_related("environment", "rollout__flag", "release")
        .order_by("index")
    )


def _rollout_rows(rollout: Rollout) -> list[dict]:
    from canary.controller.explain import evidence_summary

    return [
        {
            "flag": rollout.flag.key,
            "check": item["check"],
            "status": item["status"],
            "answer": item.get("answer"),
            "value": item.get("value"),
            **{key: item.get(key) for key in _ESTIMATE_KEYS},
        }
        for item in evidence_summary(rollout)
    ]


def _release_rows(release: Any) -> list[dict]:
    from canary.services.release_sync import release_estimates

    return [
        {
            "flag": flag,
            "check": check,
            "status": None,
            "answer": item.get("decision"),
            "value": None,
            **{key: item.get(key) for key in _ESTIMATE_KEYS},
        }
        for flag, checks in sorted(release_estimates(release).items())
        for check, item in sorted(checks.items())
    ]


def stage_evidence(stage: PipelineStage) -> dict:
    """Return one stage's environment, target, status and, per check, the
    last comparison (``evidence_summary`` of a rollout, the
    ``release_estimates`` of a release)."""
    target = stage.target
    is_rollout = stage.rollout_id is not None
    return {
        "index": stage.index,
        "environment": stage.environment.key,
        "kind": stage.kind,
        "target_id": target.pk,
        "name": target.name,
        "status": target.status,
        "started_at": stage.started_at,
        "checks": _rollout_rows(target) if is_rollout else _release_rows(target),
    }


def pipeline_evidence(pipeline: Pipeline) -> list[dict]:
    """Return ``stage_evidence`` of every stage, in order."""
    return [stage_evidence(stage) for stage in pipeline_stages(pipeline)]


def stage_pair_evidence(rollout: Rollout) -> dict | None:
    """Return ``{"earlier", "this"}``: the evidence of the stage before the
    one ``rollout`` is (its own, or its release's) beside this stage's;
    None for a first stage or a rollout in no pipeline."""
    stage = (
        PipelineStage.objects.filter(rollout=rollout)
        if rollout.release_id is None
        else PipelineStage.objects.filter(release_id=rollout.release_id)
    ).first()
    if stage is None or stage.index == 0:
        return None
    pair = (
        PipelineStage.objects.filter(
            pipeline_id=stage.pipeline_id, index__in=[stage.index - 1, stage.index]
        )
        .select_related("environment", "rollout__flag", "release")
        .order_by("index")
    )
    earlier, this = (stage_evidence(row) for row in pair)
    return {"pipeline": stage.pipeline_id, "earlier": earlier, "this": this}
