"""Pipeline API over the Django test client, real database."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from canary.models import Pipeline, PipelineStatus, RolloutStatus
from controlplane.audit.models import AuditEvent
from tests.canary.pipeline_helpers import (
    PILOT,
    complete_stage,
    stage_rollout,
    stage_spec,
)

Status = RolloutStatus
BODY = {
    "name": "ship sequential_workflow",
    "flag": "sequential_workflow",
    "stages": [stage_spec("staging"), stage_spec("production")],
    "requires_approval": True,
}


def _user(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


def _client(username: str) -> Client:
    client = Client()
    client.force_login(
        _user(username, *(f"{a}_pipeline" for a in ("view", "add", "change")))
    )
    return client


@pytest.fixture
def flag(environments, flag_factory, merchant_factory):
    merchant_factory(PILOT)
    return flag_factory("sequential_workflow")


def send(client: Client, url: str, body=None):
    return client.post(
        url, data=json.dumps(body or {}), content_type="application/json"
    )


def test_pipelines_create__valid__201_with_stages(flag):
    # Given
    api = _client("alice")
    # When
    response = send(api, "/api/v1/pipelines", BODY)
    # Then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft"
    assert body["created_by"] == "user:alice"
    assert [s["environment"] for s in body["stages"]] == ["staging", "production"]
    assert [s["kind"] for s in body["stages"]] == ["rollout", "rollout"]
    listed = api.get("/api/v1/pipelines").json()
    assert [p["id"] for p in listed["results"]] == [body["id"]]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"stages": [stage_spec("staging")]}, 400, "stages"),
        (
            {"stages": [stage_spec("staging"), stage_spec("mars")]},
            404,
            "stages[1].environment",
        ),
        ({"flag": "nope"}, 404, "flag"),
        ({"flags": ["a", "b"]}, 400, "flag"),
        ({"stages": [{"environment": "staging"}]}, 400, "stages[0].template"),
    ],
)
def test_pipelines_create__bad_input__field_error(flag, change, status, field):
    # Given
    api = _client("alice")
    # When
    response = send(api, "/api/v1/pipelines", {**BODY, **change})
    # Then
    assert response.status_code == status, response.content
    assert field in response.json()["errors"]
    assert not Pipeline.objects.exists()


def test_pipeline_detail__unknown__404(db):
    # Given / When
    response = _client("alice").get("/api/v1/pipelines/999")
    # Then
    assert response.status_code == 404


def test_pipelines__anonymous__401(db):
    # Given / When
    response = Client().get("/api/v1/pipelines")
    # Then
    assert response.status_code == 401


def test_pipeline_start__view_permission_only__403(flag):
    # Given
    pipeline_id = send(_client("alice"), "/api/v1/pipelines", BODY).json()["id"]
    viewer = Client()
    viewer.force_login(_user("viewer", "view_pipeline"))
    # When
    response = send(viewer, f"/api/v1/pipelines/{pipeline_id}/start")
    # Then
    assert response.status_code == 403
    assert Pipeline.objects.get(pk=pipeline_id).status == PipelineStatus.DRAFT


def test_pipeline_approve__creator_409_other_user_starts_production(
    flag, django_capture_on_commit_callbacks
):
    # Given
    alice, bob = _client("alice"), _client("bob")
    pipeline_id = send(alice, "/api/v1/pipelines", BODY).json()["id"]
    started = send(alice, f"/api/v1/pipelines/{pipeline_id}/start")
    assert started.status_code == 200, started.content
    pipeline = Pipeline.objects.get(pk=pipeline_id)
    with django_capture_on_commit_callbacks(execute=True):
        complete_stage(pipeline, 0)
    # When
    early = send(alice, f"/api/v1/pipelines/{pipeline_id}/approve")
    with django_capture_on_commit_callbacks(execute=True):
        approved = send(
            bob, f"/api/v1/pipelines/{pipeline_id}/approve", {"reason": "ok"}
        )
    again = send(bob, f"/api/v1/pipelines/{pipeline_id}/approve")
    # Then
    assert early.status_code == 409
    assert "approved_by" in early.json()["errors"]
    assert approved.status_code == 200, approved.content
    body = approved.json()
    assert body["status"] == "running"
    assert body["approved_by"] == "user:bob"
    shown = bob.get(f"/api/v1/pipelines/{pipeline_id}").json()
    assert [s["status"] for s in shown["stages"]] == ["completed", "running"]
    assert stage_rollout(pipeline, 1).status == Status.RUNNING
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="pipeline.approved").count() == 1


def test_pipeline_abort__draft__200_aborted(flag):
    # Given
    api = _client("alice")
    pipeline_id = send(api, "/api/v1/pipelines", BODY).json()["id"]
    # When
    response = send(api, f"/api/v1/pipelines/{pipeline_id}/abort", {"reason": "no"})
    start = send(api, f"/api/v1/pipelines/{pipeline_id}/start")
    # Then
    assert response.status_code == 200
    assert response.json()["status"] == "aborted"
    assert [s["status"] for s in response.json()["stages"]] == ["aborted", "aborted"]
    assert start.status_code == 409


def test_pipelines_list__bad_status__400(db):
    # Given / When
    response = _client("alice").get("/api/v1/pipelines?status=sideways")
    # Then
    assert response.status_code == 400
    assert "status" in response.json()["errors"]
