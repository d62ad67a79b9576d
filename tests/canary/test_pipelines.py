"""Pipelines through the services: staging first, production after."""

from __future__ import annotations

import pytest

from canary.exceptions import Conflict, InvalidInput, NotFound
from canary.models import (
    Pipeline,
    PipelineStatus,
    Release,
    ReleaseStatus,
    RolloutStatus,
)
from canary.services.pipelines import (
    pipeline_abort,
    pipeline_approve,
    pipeline_evidence,
    pipeline_stage_start,
    pipeline_start,
)
from canary.services.releases import release_members
from canary.services.rollbacks import rollout_fail_phase, rollout_rollback_finished
from canary.services.rollouts import rollout_advance
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary.pipeline_helpers import (
    ALICE,
    BOB,
    PILOT,
    actions,
    closed_url,
    complete_stage,
    make_pipeline,
    stage,
    stage_rollout,
    stage_spec,
)

Status = RolloutStatus


@pytest.fixture
def flag(environments, flag_factory, merchant_factory):
    merchant_factory(PILOT)
    return flag_factory("sequential_workflow")


def test_pipeline_create__one_flag__draft_rollout_per_stage_and_audited(flag):
    # Given / When
    pipeline = make_pipeline(flag="sequential_workflow")
    # Then
    staging, production = stage_rollout(pipeline, 0), stage_rollout(pipeline, 1)
    assert pipeline.status == PipelineStatus.DRAFT
    assert (staging.environment.key, production.environment.key) == (
        "staging",
        "production",
    )
    assert staging.status == production.status == Status.DRAFT
    event = AuditEvent.objects.get(action="pipeline.created")
    assert event.after["kind"] == "rollout"
    assert [s["environment"] for s in event.after["stages"]] == [
        "staging",
        "production",
    ]
    assert event.actor_name == "alice"


@pytest.mark.parametrize(
    ("kwargs", "error", "field"),
    [
        ({"stages": [stage_spec("staging")]}, InvalidInput, "stages"),
        (
            {"stages": [stage_spec("staging"), stage_spec("staging")]},
            InvalidInput,
            "stages[1].environment",
        ),
        (
            {"stages": [stage_spec("staging"), stage_spec("mars")]},
            NotFound,
            "stages[1].environment",
        ),
        (
            {"stages": [stage_spec("staging"), stage_spec("production", colour=1)]},
            InvalidInput,
            "stages[1].colour",
        ),
        (
            {
                "stages": [
                    stage_spec("staging", template="nope"),
                    stage_spec("production"),
                ]
            },
            InvalidInput,
            "stages[0].template",
        ),
        ({"flag": "nope"}, NotFound, "flag"),
        ({"flag": None, "flags": ["sequential_workflow"]}, InvalidInput, "flags"),
    ],
)
def test_pipeline_create__bad_input__field_error_nothing_created(
    flag, kwargs, error, field
):
    # Given
    kwargs = {"flag": "sequential_workflow", **kwargs}
    # When
    with pytest.raises(error) as caught:
        make_pipeline(**kwargs)
    # Then
    assert caught.value.field == field
    assert not Pipeline.objects.exists()
    assert not AuditEvent.objects.filter(action="pipeline.created").exists()


def test_pipeline__staging_completes__production_starts_then_pipeline_completes(
    flag, django_capture_on_commit_callbacks
):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow")
    pipeline = pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    assert pipeline.status == PipelineStatus.RUNNING
    assert stage_rollout(pipeline, 0).status == Status.RUNNING
    assert stage_rollout(pipeline, 1).status == Status.DRAFT
    # When
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.RUNNING
    assert pipeline.current_stage == 1
    assert stage_rollout(pipeline, 1).status == Status.RUNNING
    # When
    complete_stage(pipeline, 1)
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.COMPLETED
    assert pipeline.finished_at is not None
    assert actions(pipeline) == [
        "pipeline.created",
        "pipeline.started",
        "pipeline.stage_completed",
        "pipeline.stage_started",
        "pipeline.completed",
    ]
    completed = AuditEvent.objects.get(action="pipeline.completed")
    assert [s["status"] for s in completed.details["stages"]] == [
        "completed",
        "completed",
    ]
    assert [e["environment"] for e in completed.details["evidence"]] == [
        "staging",
        "production",
    ]


def test_pipeline__requires_approval__waits_creator_refused_other_starts_once(
    flag, django_capture_on_commit_callbacks
):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow", requires_approval=True)
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.AWAITING_APPROVAL
    assert stage_rollout(pipeline, 1).status == Status.DRAFT
    # When: the creator tries to approve
    with pytest.raises(Conflict) as caught:
        pipeline_approve(pipeline_id=pipeline.pk, actor=ALICE)
    # Then
    assert caught.value.field == "approved_by"
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.AWAITING_APPROVAL
    # When: another person approves, and the start task is redelivered
    with django_capture_on_commit_callbacks(execute=True):
        pipeline_approve(pipeline_id=pipeline.pk, actor=BOB, reason="staging ok")
    again = pipeline_stage_start(pipeline_id=pipeline.pk, stage_index=1)
    # Then
    pipeline.refresh_from_db()
    assert again is None
    assert pipeline.status == PipelineStatus.RUNNING
    assert pipeline.approved_by == "user:bob"
    assert stage_rollout(pipeline, 1).status == Status.RUNNING
    assert actions(pipeline).count("pipeline.stage_started") == 1
    assert actions(pipeline)[-3:] == [
        "pipeline.awaiting_approval",
        "pipeline.approved",
        "pipeline.stage_started",
    ]
    starts = AuditEvent.objects.filter(
        action="rollout.transition",
        target_id=str(stage_rollout(pipeline, 1).pk),
        after__status="running",
    )
    assert starts.count() == 1


def test_pipeline_approve__not_awaiting__conflict(flag):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow", requires_approval=True)
    # When / Then
    with pytest.raises(Conflict):
        pipeline_approve(pipeline_id=pipeline.pk, actor=BOB)


def test_pipeline__staging_rolled_back__failed_and_production_draft_aborted(flag):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow")
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # When
    rollout_fail_phase(
        rollout_id=stage_rollout(pipeline, 0).pk,
        actor=SYSTEM,
        reason="errors up",
        on_failure="rollback_1",
    )
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.FAILED
    assert stage_rollout(pipeline, 1).status == Status.ABORTED
    failed = AuditEvent.objects.get(action="pipeline.failed")
    assert "stage 1 (staging) failed" in failed.details["reason"]
    assert failed.details["aborted_stages"] == [1]
    assert actions(pipeline).count("pipeline.failed") == 1


def test_pipeline__production_preflight_refused__failed_with_problems(
    flag, django_capture_on_commit_callbacks
):
    # Given: production's check answers from a port nobody listens on
    check = {
        "name": "health",
        "provider": "http",
        "spec": {"url": closed_url(), "measure": "status"},
        "comparator": "eq",
        "threshold": 200,
        "timeout": 0.5,
    }
    pipeline = make_pipeline(
        flag="sequential_workflow",
        stages=[stage_spec("staging"), stage_spec("production", checks=[check])],
    )
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.FAILED
    assert stage_rollout(pipeline, 1).status == Status.ABORTED
    failed = AuditEvent.objects.get(action="pipeline.failed")
    assert "did not start" in failed.details["reason"]
    assert any("health" in p for p in failed.details["problems"])


def test_pipeline_start__preflight_refused__stays_draft(flag):
    # Given
    check = {
        "name": "health",
        "provider": "http",
        "spec": {"url": closed_url(), "measure": "status"},
        "comparator": "eq",
        "threshold": 200,
        "timeout": 0.5,
    }
    pipeline = make_pipeline(
        flag="sequential_workflow",
        stages=[stage_spec("staging", checks=[check]), stage_spec("production")],
    )
    # When
    with pytest.raises(Conflict):
        pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.DRAFT
    assert stage(pipeline, 0).started_at is None
    assert "pipeline.started" not in actions(pipeline)


def test_pipeline_abort__running__stage_and_drafts_aborted(flag):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow")
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # When
    for _ in range(2):
        pipeline = pipeline_abort(pipeline_id=pipeline.pk, actor=BOB, reason="stop")
    # Then
    assert pipeline.status == PipelineStatus.ABORTED
    assert stage_rollout(pipeline, 0).status == Status.ABORTED
    assert stage_rollout(pipeline, 1).status == Status.ABORTED
    assert actions(pipeline).count("pipeline.aborted") == 1
    assert "pipeline.failed" not in actions(pipeline)


def test_pipeline_start__finished__conflict(flag):
    # Given
    pipeline = make_pipeline(flag="sequential_workflow")
    pipeline_abort(pipeline_id=pipeline.pk, actor=BOB)
    # When / Then
    with pytest.raises(Conflict):
        pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)


def test_pipeline__two_flags__releases_staging_then_production(
    environments, flag_factory, merchant_factory, django_capture_on_commit_callbacks
):
    # Given
    merchant_factory(PILOT)
    flag_factory("flag_a")
    flag_factory("flag_b")
    pipeline = make_pipeline(flags=["flag_a", "flag_b"])
    assert stage(pipeline, 0).release is not None
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # Then
    production = Release.objects.get(pk=stage(pipeline, 1).release_id)
    assert production.environment.key == "production"
    assert production.status == ReleaseStatus.RUNNING
    # When
    complete_stage(pipeline, 1)
    # Then
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.COMPLETED
    evidence = pipeline_evidence(pipeline)
    assert [e["kind"] for e in evidence] == ["release", "release"]
    assert [e["status"] for e in evidence] == ["completed", "completed"]


def test_pipeline_evidence__rollout_stages__checks_per_stage(flag):
    # Given
    check = {
        "name": "error_rate",
        "provider": "outcomes",
        "spec": {"metric": "error_rate"},
        "comparator": "lt",
        "threshold": 0.05,
    }
    pipeline = make_pipeline(
        flag="sequential_workflow",
        stages=[stage_spec("staging", checks=[check]), stage_spec("production")],
    )
    # When
    evidence = pipeline_evidence(pipeline)
    # Then
    assert evidence[0]["environment"] == "staging"
    assert evidence[0]["kind"] == "rollout"
    assert [c["check"] for c in evidence[0]["checks"]] == ["error_rate"]
    assert evidence[1]["checks"] == []


def test_pipeline__staging_release_rolls_one_feature_back__failed_production_aborted(
    environments, flag_factory, merchant_factory
):
    # Given: a two-flag pipeline; staging's flag_a is rolled back on its own
    merchant_factory(PILOT)
    flag_factory("flag_a")
    flag_factory("flag_b")
    pipeline = make_pipeline(flags=["flag_a", "flag_b"])
    pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    members = {m.flag.key: m for m in release_members(stage(pipeline, 0).release)}
    rollout_fail_phase(
        rollout_id=members["flag_a"].pk,
        actor=SYSTEM,
        reason="flag_a worse",
        on_failure="rollback_1",
    )
    rollout_rollback_finished(
        rollout_id=members["flag_a"].pk, actor=SYSTEM, succeeded=True
    )
    # When: flag_b completes, so the staging release completes partly
    for phase in range(members["flag_b"].phases.count()):
        rollout_advance(
            rollout_id=members["flag_b"].pk,
            expected_phase=phase,
            actor=SYSTEM,
            reason="t",
        )
    # Then
    staging = Release.objects.get(pk=stage(pipeline, 0).release_id)
    assert staging.status == ReleaseStatus.COMPLETED
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.FAILED
    assert "rolled back flag_a" in pipeline.summary["reason"]
    production = Release.objects.get(pk=stage(pipeline, 1).release_id)
    assert production.status == ReleaseStatus.ABORTED
