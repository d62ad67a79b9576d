"""Pipelines respect each environment's four-eyes policy for rollout starts:
a stage in such an environment starts only when its change request is
approved, whoever (the controller included) asked for it."""

from __future__ import annotations

import pytest

from canary.exceptions import Conflict
from canary.models import PipelineStatus, RolloutStatus
from canary.services.pipelines import pipeline_stage_start, pipeline_start
from controlplane.audit.actors import Actor
from flags.changes import services as change_services
from flags.changes.models import ChangeRequest
from flags.changes.models import ChangeRequestStatus as CRStatus
from flags.models import Environment
from tests.canary.pipeline_helpers import (
    ALICE,
    BOB,
    PILOT,
    actions,
    complete_stage,
    make_pipeline,
    stage,
    stage_rollout,
)

Status = RolloutStatus
CAROL = Actor(type="user", id="test:carol", name="carol")


@pytest.fixture
def flag(environments, flag_factory, merchant_factory):
    merchant_factory(PILOT)
    return flag_factory("sequential_workflow")


def _policy(key: str, approvals: int) -> None:
    change_services.approval_policy_set(
        actor=ALICE,
        environment=Environment.objects.get(key=key),
        rollout_start=approvals,
    )


def test_pipeline__production_needs_two_approvals__stage_waits_then_starts_once(
    flag, django_capture_on_commit_callbacks
):
    # Given: production asks two approvals of every rollout start
    _policy("production", 2)
    pipeline = pipeline_start(pipeline_id=make_pipeline(flag=flag.key).pk, actor=ALICE)
    # When: staging completes; the controller's start of production is gated
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # Then: production did not start; a change request by the controller waits
    production = stage_rollout(pipeline, 1)
    assert production.status == Status.DRAFT
    change = ChangeRequest.objects.get(operation="rollout.start")
    assert change.status == CRStatus.PENDING and change.required_approvals == 2
    assert change.target == f"rollout {production.pk}"
    assert actions(pipeline)[-1] == "pipeline.stage_awaiting_change_request"
    # ... and a redelivered start task asks nothing twice
    assert pipeline_stage_start(pipeline_id=pipeline.pk, stage_index=1) is None
    assert ChangeRequest.objects.filter(operation="rollout.start").count() == 1
    # When: one approval, then the second
    change_services.change_request_approve(change_request_id=change.pk, actor=BOB)
    assert stage_rollout(pipeline, 1).status == Status.DRAFT
    change_services.change_request_approve(change_request_id=change.pk, actor=CAROL)
    # Then: production started, once, and the pipeline knows
    assert stage_rollout(pipeline, 1).status == Status.RUNNING
    assert stage(pipeline, 1).started_at is not None
    assert actions(pipeline).count("pipeline.stage_started") == 1
    # When: production completes
    complete_stage(pipeline, 1)
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.COMPLETED


def test_pipeline_start__staging_gated__draft_until_applied_twice_pressed_conflict(
    flag,
):
    # Given: staging asks one approval of rollout starts
    _policy("staging", 1)
    pipeline = make_pipeline(flag=flag.key)
    # When
    pipeline = pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # Then: nothing started; pressing start again names the waiting request
    assert pipeline.status == PipelineStatus.DRAFT
    assert stage_rollout(pipeline, 0).status == Status.DRAFT
    change = ChangeRequest.objects.get(operation="rollout.start")
    with pytest.raises(Conflict, match=f"change request {change.pk} already asks"):
        pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
    # When: approved by someone else
    change_services.change_request_approve(change_request_id=change.pk, actor=BOB)
    # Then: the pipeline runs its first stage
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.RUNNING
    assert stage_rollout(pipeline, 0).status == Status.RUNNING
    assert actions(pipeline)[-1] == "pipeline.started"


def test_pipeline_start_api_and_command__gated_stage__202_and_pending_line(flag):
    # Given: staging asks one approval of rollout starts; two drafts
    from io import StringIO

    from django.contrib.auth.models import Permission, User
    from django.core.management import call_command
    from django.test import Client

    _policy("staging", 1)
    user = User.objects.create_user("dana", password="x")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["view_pipeline", "change_pipeline"])
    )
    api = Client()
    api.force_login(user)
    first, second = make_pipeline(flag=flag.key), make_pipeline(flag=flag.key)
    # When: one started over the API, the other at the command line
    response = api.post(
        f"/api/v1/pipelines/{first.pk}/start", data={}, content_type="application/json"
    )
    out = StringIO()
    call_command("pipeline", "start", str(second.pk), stdout=out, stderr=StringIO())
    # Then: 202 with the change request; the command prints the pending line
    assert response.status_code == 202, response.content
    body = response.json()
    change = ChangeRequest.objects.get(pk=body["change_request"]["id"])
    assert change.target == f"rollout {stage_rollout(first, 0).pk}"
    assert "approval" in body["detail"]
    other = ChangeRequest.objects.exclude(pk=change.pk).get()
    assert f"change request {other.pk} created" in out.getvalue()
    assert {stage_rollout(p, 0).status for p in (first, second)} == {Status.DRAFT}
