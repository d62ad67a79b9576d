"""Release API over the Django test client, real database."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from canary.models import Release, ReleaseStatus, RolloutStatus
from controlplane.audit.actors import SYSTEM, actor_for_user
from controlplane.audit.models import AuditEvent
from flags.changes import services as change_services
from flags.changes.models import ChangeRequest
from tests.release_fixtures import (  # noqa: F401 (fixtures)
    CHECK,
    KEYS,
    PHASES,
    release_complete,
    release_factory,
    release_flags,
)


def _user_with(*codenames: str, username: str = "ops") -> User:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


@pytest.fixture
def api(db) -> Client:
    client = Client()
    client.force_login(
        _user_with(
            *[
                f"{action}_{model}"
                for model in ("release", "rollout", "healthcheck")
                for action in ("view", "add", "change")
            ]
        )
    )
    return client


def send(client: Client, method: str, url: str, body=None):
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(url, data=data, content_type="application/json")


def _create_body(**changes) -> dict:
    return {
        "environment": "production",
        "flags": KEYS,
        "phases": PHASES,
        "checks": [CHECK],
        "name": "checkout bundle",
        **changes,
    }


def test_release_create__two_flags_and_phases__201_draft_with_members(
    api, release_flags
):
    # Given / When
    response = send(api, "post", "/api/v1/releases", _create_body())
    # Then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "draft"
    assert body["member_count"] == 2
    assert [m["flag"] for m in body["members"]] == KEYS
    assert {m["status"] for m in body["members"]} == {"draft"}
    assert body["members"][0]["phase_count"] == 3
    assert body["members"][0]["phase_name"] == "pilot"
    assert AuditEvent.objects.filter(
        action="release.created", target_id=str(body["id"])
    ).exists()


def test_release_create__template_and_treatment__members_follow_the_plan(
    api, release_flags
):
    # Given
    body = _create_body(
        phases=None,
        template="pilot-10-50-100",
        pilot_merchants=["m-1001"],
        duration_scale=0.01,
        flags=[KEYS[0], {"flag": KEYS[1], "treatment": "on"}],
    )
    del body["phases"]
    # When
    response = send(api, "post", "/api/v1/releases", body)
    # Then
    assert response.status_code == 201, response.content
    members = response.json()["members"]
    assert members[1]["treatment_variation"] == "on"
    assert response.json()["template"] == "pilot-10-50-100"


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"flags": [KEYS[0]]}, "flags"),
        ({"flags": [KEYS[0], "no_such_flag"]}, "flags[1]"),
        ({"flags": [KEYS[0], KEYS[0]]}, "flags[1]"),
        ({"template": "pilot-10-50-100"}, "template"),
        ({"environment": ""}, "environment"),
        ({"phases": [{"name": "x", "percentage": 250}]}, "phases[0].percentage"),
    ],
)
def test_release_create__bad_input__400_field_level_nothing_created(
    api, release_flags, changes, field
):
    # Given / When
    response = send(api, "post", "/api/v1/releases", _create_body(**changes))
    # Then
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert Release.objects.count() == 0


def test_release_create__unknown_environment__404(api, release_flags):
    # Given / When
    response = send(api, "post", "/api/v1/releases", _create_body(environment="mars"))
    # Then
    assert response.status_code == 404


def test_releases_list__anonymous__401(db):
    # Given / When
    response = Client().get("/api/v1/releases")
    # Then
    assert response.status_code == 401


def test_release_start__view_permission_only__403_and_unchanged(release_factory):
    # Given
    release = release_factory()
    client = Client()
    client.force_login(_user_with("view_release"))
    # When
    listed = client.get("/api/v1/releases")
    started = send(client, "post", f"/api/v1/releases/{release.pk}/start", {})
    # Then
    assert listed.status_code == 200
    assert started.status_code == 403
    release.refresh_from_db()
    assert release.status == ReleaseStatus.DRAFT


def test_releases_list__more_releases__constant_query_count(api, release_factory):
    # Given
    release_factory(name="one")
    with CaptureQueriesContext(connection) as few:
        first = api.get("/api/v1/releases")
    for i in range(4):
        release_factory(name=f"more {i}")
    # When
    with CaptureQueriesContext(connection) as many:
        second = api.get("/api/v1/releases")
    # Then
    assert first.json()["count"] == 1 and second.json()["count"] == 5
    assert len(many) == len(few)
    row = second.json()["results"][0]
    assert row["member_count"] == 2 and row["deployed_count"] == 0


def test_releases_list__status_filter__only_matching_and_bad_status_400(
    api, release_factory
):
    # Given
    draft = release_factory(name="draft")
    running = release_factory(name="running", started=True)
    # When
    response = api.get("/api/v1/releases?status=running")
    bad = api.get("/api/v1/releases?status=flying")
    # Then
    assert [r["id"] for r in response.json()["results"]] == [running.pk]
    assert draft.pk not in [r["id"] for r in response.json()["results"]]
    assert bad.status_code == 400 and "status" in bad.json()["errors"]


def test_release_retrieve__unknown__404(api, db):
    # Given / When
    response = api.get("/api/v1/releases/999999")
    # Then
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_release_start__draft__running_members_live_and_audited(api, release_factory):
    # Given
    release = release_factory()
    # When
    response = send(api, "post", f"/api/v1/releases/{release.pk}/start", {})
    # Then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "running"
    assert {m["status"] for m in body["members"]} == {RolloutStatus.RUNNING}
    assert AuditEvent.objects.filter(
        action="release.started", target_id=str(release.pk)
    ).exists()


def test_release_start__aborted__409(api, release_factory):
    # Given
    release = release_factory()
    send(api, "post", f"/api/v1/releases/{release.pk}/abort", {"reason": "no"})
    # When
    response = send(api, "post", f"/api/v1/releases/{release.pk}/start", {})
    # Then
    assert response.status_code == 409
    assert response.json()["errors"]["status"]


def test_release_start__policy_needs_approval__202_then_approval_starts_it(
    api, release_factory, production
):
    # Given: production asks one approval for rollout starts
    change_services.approval_policy_set(
        actor=SYSTEM, environment=production, rollout_start=1
    )
    release = release_factory()
    # When
    response = send(
        api, "post", f"/api/v1/releases/{release.pk}/start", {"reason": "go"}
    )
    # Then: a change request, nothing started
    assert response.status_code == 202, response.content
    change = ChangeRequest.objects.get()
    assert change.operation == "release.start"
    assert change.arguments == {"release": release.pk, "reason": "go"}
    assert change.target == f"release {release.pk}"
    release.refresh_from_db()
    assert release.status == ReleaseStatus.DRAFT
    # When: someone else approves
    reviewer = actor_for_user(User.objects.create_user("reviewer", password="x"))
    change = change_services.change_request_approve(
        change_request_id=change.pk, actor=reviewer
    )
    # Then: the release started as its author asked
    release.refresh_from_db()
    assert change.status == "applied", change.result
    assert release.status == ReleaseStatus.RUNNING


def test_release_pause_resume__running__members_follow(api, release_factory):
    # Given
    release = release_factory(started=True)
    # When
    paused = send(
        api, "post", f"/api/v1/releases/{release.pk}/pause", {"reason": "look"}
    )
    resumed = send(api, "post", f"/api/v1/releases/{release.pk}/resume", {})
    # Then
    assert paused.status_code == 200
    assert {m["status"] for m in paused.json()["members"]} == {"paused"}
    assert {m["status"] for m in resumed.json()["members"]} == {"running"}
    actions = list(
        AuditEvent.objects.filter(
            target_id=str(release.pk), target_type="canary.release"
        )
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions[-2:] == ["release.paused", "release.resumed"]


def test_release_approve__running__200_audited(api, release_factory):
    # Given
    release = release_factory(started=True)
    # When
    response = send(api, "post", f"/api/v1/releases/{release.pk}/approve", {})
    # Then
    assert response.status_code == 200
    assert AuditEvent.objects.filter(
        action="release.approved", target_id=str(release.pk)
    ).exists()


def test_release_abort__without_reason__400_unchanged(api, release_factory):
    # Given
    release = release_factory(started=True)
    # When
    response = send(api, "post", f"/api/v1/releases/{release.pk}/abort", {})
    # Then
    assert response.status_code == 400
    assert "reason" in response.json()["errors"]
    release.refresh_from_db()
    assert release.status == ReleaseStatus.RUNNING


def test_release_abort__running__aborted_members_restored(api, release_factory):
    # Given
    release = release_factory(started=True)
    # When
    response = send(
        api, "post", f"/api/v1/releases/{release.pk}/abort", {"reason": "bad day"}
    )
    # Then
    assert response.status_code == 200
    assert response.json()["status"] == "aborted"
    assert {m["status"] for m in response.json()["members"]} == {"aborted"}


def test_release_retrieve__completed__summary_and_counts(api, release_factory):
    # Given
    release = release_complete(release_factory(started=True))
    # When
    response = api.get(f"/api/v1/releases/{release.pk}")
    # Then
    body = response.json()
    assert body["status"] == "completed"
    assert body["deployed_count"] == 2
    assert body["summary"]["deployed"] == KEYS
    assert [m["current_phase"] for m in body["members"]] == [2, 2]
    assert body["estimates"] == {}


def test_release_schema__endpoints_documented(api, db):
    # Given / When
    response = api.get("/api/schema/")
    # Then
    text = response.content.decode()
    assert response.status_code == 200
    assert "/api/v1/releases/{id}/start" in text
    assert "releases_create" in text
