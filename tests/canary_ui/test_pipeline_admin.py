"""Pipeline admin: the stages side by side with their evidence, buttons
calling the services as the admin user, the create form, and the staging
evidence on a later stage's rollout page."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from canary.models import Pipeline, PipelineStatus, RolloutStatus
from controlplane.audit.models import AuditEvent
from tests.canary.pipeline_helpers import (
    PILOT,
    complete_stage,
    make_pipeline,
    stage_rollout,
    stage_spec,
)

Status = RolloutStatus
CHECK = {
    "name": "error_rate",
    "provider": "outcomes",
    "spec": {"metric": "error_rate"},
    "comparator": "lt",
    "threshold": 0.05,
}


@pytest.fixture
def admin_client(db) -> Client:
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    return client


@pytest.fixture
def pipeline(environments, flag_factory, merchant_factory):
    merchant_factory(PILOT)
    flag_factory("sequential_workflow")
    return make_pipeline(
        flag="sequential_workflow",
        requires_approval=True,
        stages=[stage_spec("staging", checks=[CHECK]), stage_spec("production")],
    )


def test_pipeline_changelist__one_pipeline__200_listed(admin_client, pipeline):
    # Given / When
    response = admin_client.get("/admin/canary/pipeline/")
    # Then
    assert response.status_code == 200
    assert "ship it" in response.content.decode()


def test_pipeline_change_page__draft__stages_side_by_side_with_buttons(
    admin_client, pipeline
):
    # Given / When
    response = admin_client.get(f"/admin/canary/pipeline/{pipeline.pk}/change/")
    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert 'class="pipeline-stages"' in page
    assert 'id="pipeline-stage-0"' in page and 'id="pipeline-stage-1"' in page
    assert "staging: rollout" in page and "production: rollout" in page
    assert "error_rate" in page
    assert f"/admin/canary/pipeline/{pipeline.pk}/do/start/" in page
    assert "button danger" in page
    assert f'data-confirm="Abort pipeline {pipeline.pk} (ship it)?"' in page
    assert "/do/approve/" not in page
    assert f"/admin/canary/rollout/{stage_rollout(pipeline, 1).pk}/change/" in page


def test_pipeline_start_button__post__running_by_admin(admin_client, pipeline):
    # Given
    url = f"/admin/canary/pipeline/{pipeline.pk}/do/start/"
    assert admin_client.get(url).status_code == 200
    # When
    response = admin_client.post(url, {"reason": "go"})
    # Then
    assert response.status_code == 302
    pipeline.refresh_from_db()
    assert pipeline.status == PipelineStatus.RUNNING
    assert AuditEvent.objects.get(action="pipeline.started").actor_name == "boss"


def test_pipeline_abort_button__confirm_page__danger_with_confirm(
    admin_client, pipeline
):
    # Given / When
    response = admin_client.get(f"/admin/canary/pipeline/{pipeline.pk}/do/abort/")
    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "danger" in page and "data-confirm=" in page


def test_pipeline_approve_button__awaiting__other_admin_starts_production(
    admin_client, pipeline, django_capture_on_commit_callbacks
):
    # Given: created by alice, staging completed
    admin_client.post(f"/admin/canary/pipeline/{pipeline.pk}/do/start/", {})
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    page = admin_client.get(f"/admin/canary/pipeline/{pipeline.pk}/change/")
    assert "/do/approve/" in page.content.decode()
    # When
    with django_capture_on_commit_callbacks(execute=True):
        response = admin_client.post(
            f"/admin/canary/pipeline/{pipeline.pk}/do/approve/", {"reason": "ok"}
        )
    # Then
    assert response.status_code == 302
    pipeline.refresh_from_db()
    assert pipeline.approved_by == "user:boss"
    assert stage_rollout(pipeline, 1).status == Status.RUNNING


def test_pipeline_add__form__draft_created_by_admin(
    admin_client, environments, flag_factory, merchant_factory
):
    # Given
    merchant_factory(PILOT)
    flag_factory("sequential_workflow")
    form = admin_client.get("/admin/canary/pipeline/add/")
    assert form.status_code == 200
    data = {
        "flags": ["sequential_workflow"],
        "first_environment": "staging",
        "first_plan": "staging-then-production",
        "second_environment": "production",
        "second_plan": "pilot-10-50-100",
        "pilot_merchants": PILOT,
        "requires_approval": "on",
    }
    # When
    response = admin_client.post("/admin/canary/pipeline/add/", data)
    # Then
    assert response.status_code == 302, response.content.decode()[:2000]
    pipeline = Pipeline.objects.get()
    assert pipeline.requires_approval is True
    assert stage_rollout(pipeline, 0).environment.key == "staging"
    assert AuditEvent.objects.get(action="pipeline.created").actor_name == "boss"


def test_pipeline_add__same_environment_twice__form_error(
    admin_client, environments, flag_factory, merchant_factory
):
    # Given
    merchant_factory(PILOT)
    flag_factory("sequential_workflow")
    data = {
        "flags": ["sequential_workflow"],
        "first_environment": "staging",
        "first_plan": "demo-fast",
        "second_environment": "staging",
        "second_plan": "demo-fast",
        "pilot_merchants": PILOT,
    }
    # When
    response = admin_client.post("/admin/canary/pipeline/add/", data)
    # Then
    assert response.status_code == 200
    assert "stages[1].environment" in response.content.decode()
    assert not Pipeline.objects.exists()


def test_rollout_page__production_stage__staging_evidence_beside(
    admin_client, pipeline
):
    # Given
    production = stage_rollout(pipeline, 1)
    # When
    response = admin_client.get(f"/admin/canary/rollout/{production.pk}/change/")
    staging_page = admin_client.get(
        f"/admin/canary/rollout/{stage_rollout(pipeline, 0).pk}/change/"
    )
    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert 'id="earlier-stage-evidence"' in page
    assert "Staging evidence" in page
    assert "error_rate" in page
    assert f"/admin/canary/pipeline/{pipeline.pk}/change/" in page
    assert 'id="earlier-stage-evidence"' not in staging_page.content.decode()


def test_pipeline_change_page__two_flags__release_stages_linked(
    admin_client, environments, flag_factory, merchant_factory
):
    # Given
    merchant_factory(PILOT)
    flag_factory("flag_a")
    flag_factory("flag_b")
    pipeline = make_pipeline(flags=["flag_a", "flag_b"])
    release = pipeline.stages.get(index=0).release
    # When
    response = admin_client.get(f"/admin/canary/pipeline/{pipeline.pk}/change/")
    # Then
    page = response.content.decode()
    assert response.status_code == 200
    assert "staging: release" in page
    assert f"/admin/canary/release/{release.pk}/change/" in page
