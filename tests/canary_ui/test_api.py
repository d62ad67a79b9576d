"""Rollout management API over the Django test client, real database."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from canary.models import HealthCheck, Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from tests.canary_ui.conftest import ERROR_RATE_CHECK, record, run_to_completion

Status = RolloutStatus
MODELS = ["rollout", "healthcheck", "checkrun"]


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
                for model in MODELS
                for action in ("view", "add", "change", "delete")
            ]
        )
    )
    return client


def send(client: Client, method: str, url: str, body=None):
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(url, data=data, content_type="application/json")


def test_rollouts_list__anonymous__401(db):
    # Given / When
    response = Client().get("/api/v1/rollouts")
    # Then
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_rollout_pause__view_permission_only__403_and_unchanged(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    client = Client()
    client.force_login(_user_with("view_rollout"))
    # When
    listed = client.get("/api/v1/rollouts")
    paused = send(
        client, "post", f"/api/v1/rollouts/{rollout.pk}/pause", {"reason": "x"}
    )
    # Then
    assert listed.status_code == 200
    assert paused.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING


def test_rollouts_create__from_template__201_draft_with_phases_and_checks(
    api, flag, merchants
):
    # Given
    body = {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "pilot-10-50-100",
        "pilot_merchants": ["m-1001"],
        "duration_scale": 0.1,
        "checks": [ERROR_RATE_CHECK],
    }
    # When
    response = send(api, "post", "/api/v1/rollouts", body)
    # Then
    assert response.status_code == 201, response.json()
    data = response.json()
    assert data["status"] == "draft"
    assert [p["name"] for p in data["phases"]] == ["pilot", "10%", "50%", "100%"]
    assert data["phases"][0]["min_duration"] == 60
    assert data["checks"][0]["name"] == "error_rate"
    event = AuditEvent.objects.get(action="rollout.created")
    assert event.actor_type == "user" and event.actor_name == "ops"


def test_rollouts_create__explicit_phases__201(api, flag, merchants):
    # Given
    body = {
        "flag": "sequential_workflow",
        "environment": "production",
        "name": "by hand",
        "phases": [{"percentage": 5}, {"percentage": 100}],
    }
    # When
    response = send(api, "post", "/api/v1/rollouts", body)
    # Then
    assert response.status_code == 201
    assert [p["percentage"] for p in response.json()["phases"]] == [5.0, 100.0]


@pytest.mark.parametrize(
    "phases, field",
    [
        ([{"percentage": 50}, {"percentage": 10}], "phases[1].percentage"),
        ([{"percentage": 150}], "phases[0].percentage"),
        (
            [{"target_type": "pilot", "pilot_merchants": ["m-404"]}],
            "phases[0].pilot_merchants",
        ),
        ([], "phases"),
        ("ten percent", "phases"),
    ],
)
def test_rollouts_create__bad_phases__400_with_field(
    api, flag, merchants, phases, field
):
    # Given
    body = {
        "flag": "sequential_workflow",
        "environment": "production",
        "name": "bad",
        "phases": phases,
    }
    # When
    response = send(api, "post", "/api/v1/rollouts", body)
    # Then
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not Rollout.objects.exists()


def test_rollouts_create__template_and_phases__400(api, flag, merchants):
    # Given
    body = {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "demo-fast",
        "phases": [{"percentage": 5}],
        "name": "x",
    }
    # When
    response = send(api, "post", "/api/v1/rollouts", body)
    # Then
    assert response.status_code == 400
    assert "template" in response.json()["errors"]


def test_rollouts_create__unknown_flag__404(api, production):
    # Given / When
    response = send(
        api,
        "post",
        "/api/v1/rollouts",
        {"flag": "ghost", "environment": "production", "template": "demo-fast"},
    )
    # Then
    assert response.status_code == 404


def test_rollout_retrieve__with_runs__phases_checks_latest_runs_and_decision(
    api, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.02)
    # When
    response = api.get(f"/api/v1/rollouts/{rollout.pk}")
    # Then
    assert response.status_code == 200
    data = response.json()
    assert len(data["phases"]) == 4
    assert data["checks"][0]["last_value"] == 0.02
    assert data["latest_check_runs"][0]["verdict"] == "pass"
    assert data["latest_check_runs"][0]["check_name"] == "error_rate"
    assert data["last_decision"]["action"] == "rollout.transition"
    assert data["gate"]["action"] == "advance"  # min_duration 0, one passing sample


def test_rollout_retrieve__unknown__404(api):
    # Given / When
    response = api.get("/api/v1/rollouts/4242")
    # Then
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_rollout_start__draft__running_with_preflight(api, rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/start", {})
    # Then
    assert response.status_code == 200, response.json()
    assert response.json()["status"] == "running"
    assert response.json()["preflight"]["ok"] is True


def test_rollout_start__check_does_not_answer__409_with_preflight_report(
    api, rollout_factory, sql_checks_on
):
    # Given: a sql check whose query fails
    sql_checks_on("default")
    rollout = rollout_factory(
        checks=[
            {
                "name": "rows",
                "provider": "sql",
                "threshold": 1,
                "spec": {"query": "SELECT count(*) FROM no_such_table"},
            }
        ]
    )
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/start", {})
    # Then
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "preflight_failed"
    assert body["preflight"]["ok"] is False
    assert "check rows did not answer" in body["message"]
    # the SQLSTATE, never the database's own message
    assert "database error" in body["message"]
    assert "no_such_table" not in body["message"].split("did not answer")[1]
    rollout.refresh_from_db()
    assert rollout.status == Status.DRAFT


def test_rollout_commands__pause_resume_approve_abort__statuses_and_audit(
    api, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    url = f"/api/v1/rollouts/{rollout.pk}"
    # When
    paused = send(api, "post", f"{url}/pause", {"reason": "investigating"})
    resumed = send(api, "post", f"{url}/resume", {})
    approved = send(api, "post", f"{url}/approve", {"reason": "ok"})
    aborted = send(api, "post", f"{url}/abort", {"reason": "done testing"})
    # Then
    assert [r.status_code for r in (paused, resumed, approved, aborted)] == [200] * 4
    assert paused.json()["status"] == "paused"
    assert paused.json()["pause_reason"] == "investigating"
    assert resumed.json()["status"] == "running"
    assert approved.json()["approved_phase"] == 0
    assert aborted.json()["status"] == "aborted"
    actors = set(
        AuditEvent.objects.filter(
            target_id=str(rollout.pk), action__startswith="rollout."
        )
        .exclude(actor_type="system")
        .values_list("actor_name", flat=True)
    )
    assert actors == {"ops"}


def test_rollout_resume__running__409_invalid_transition(api, rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    response = send(
        api, "post", f"/api/v1/rollouts/{rollout.pk}/pause", {"reason": "x"}
    )
    # Then
    assert response.status_code == 409
    assert response.json()["code"] == "invalid_transition"
    assert "cannot go from draft to paused" in response.json()["message"]


def test_rollout_approve__completed__409(api, rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/approve", {})
    # Then
    assert response.status_code == 409


def test_rollout_rollback__level_1__rolling_back(api, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/rollback",
        {"level": 1, "reason": "alerts"},
    )
    # Then
    assert response.status_code == 200
    assert response.json()["status"] in ("rolling_back", "rolled_back")


@pytest.mark.parametrize(
    "body, field", [({}, "level"), ({"level": 7}, "level"), ({"level": "one"}, "level")]
)
def test_rollout_rollback__bad_level__400(api, rollout_factory, body, field):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/rollback", body)
    # Then
    assert response.status_code == 400
    assert field in response.json()["errors"]


def test_rollout_rollback__level_2_without_deployment__409_or_rolled_back_at_1(
    api, rollout_factory
):
    # Given: no deployment: the rollback engine falls back to the flag
    rollout = rollout_factory(started=True)
    # When
    response = send(
        api, "post", f"/api/v1/rollouts/{rollout.pk}/rollback", {"level": 2}
    )
    # Then
    assert response.status_code == 200
    started = AuditEvent.objects.get(action="rollout.rollback_started")
    assert started.details["requested_level"] == 2 and started.details["level"] == 1


def test_rollout_fail_phase__pause__paused_with_reason(api, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/fail-phase",
        {"reason": "latency", "on_failure": "pause"},
    )
    # Then
    assert response.status_code == 200
    assert response.json()["status"] == "paused"
    assert response.json()["pause_reason"] == "latency"


def test_rollout_check_runs__filters__runs_of_the_phase(api, rollout_factory):
    # Given
    from canary import services
    from controlplane.audit.actors import SYSTEM

    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="ok"
    )
    record(rollout, "pass", 0.02)
    record(rollout, "fail", 0.2)
    # When
    everything = api.get(f"/api/v1/rollouts/{rollout.pk}/check-runs")
    phase_1 = api.get(f"/api/v1/rollouts/{rollout.pk}/check-runs?phase=1&verdict=fail")
    bad = api.get(f"/api/v1/rollouts/{rollout.pk}/check-runs?phase=x")
    # Then
    assert everything.json()["count"] == 3
    assert [r["value"] for r in phase_1.json()["results"]] == [0.2]
    assert bad.status_code == 400


def test_rollout_report__json_and_markdown__verdict(api, rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    as_json = api.get(f"/api/v1/rollouts/{rollout.pk}/report")
    as_md = api.get(f"/api/v1/rollouts/{rollout.pk}/report?format=md")
    # Then
    assert as_json.json()["verdict"] == "proceed"
    assert as_md.status_code == 200
    assert as_md["Content-Type"].startswith("text/markdown")
    assert "## Verdict: PROCEED" in as_md.content.decode()


def test_rollout_checks__crud_while_draft__audited(api, rollout_factory):
    # Given
    rollout = rollout_factory(checks=[])
    url = f"/api/v1/rollouts/{rollout.pk}/checks"
    # When
    created = send(api, "post", url, {**ERROR_RATE_CHECK, "name": "errors"})
    check_id = created.json()["id"]
    changed = send(api, "patch", f"{url}/{check_id}", {"threshold": 0.02})
    listed = api.get(url)
    deleted = send(api, "delete", f"{url}/{check_id}")
    # Then
    assert created.status_code == 201
    assert changed.status_code == 200 and changed.json()["threshold"] == 0.02
    assert [c["name"] for c in listed.json()] == ["errors"]
    assert deleted.status_code == 204
    assert not HealthCheck.objects.exists()
    assert list(
        AuditEvent.objects.filter(action__startswith="check.")
        .order_by("id")
        .values_list("action", flat=True)
    ) == ["check.created", "check.updated", "check.deleted"]


@pytest.mark.parametrize(
    "body, field",
    [
        (
            {"name": "x", "provider": "outcomes", "spec": {"metric": "error_rate"}},
            "threshold",
        ),
        ({"name": "x", "provider": "carrier-pigeon", "threshold": 1}, "provider"),
        ({**ERROR_RATE_CHECK}, "name"),  # duplicate of the existing check
        ({**ERROR_RATE_CHECK, "name": "y", "interval": 0}, "interval"),
    ],
)
def test_rollout_checks_create__bad_check__400_with_field(
    api, rollout_factory, body, field
):
    # Given
    rollout = rollout_factory()
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/checks", body)
    # Then
    assert response.status_code == 400
    assert field in response.json()["errors"], response.json()


def test_rollout_checks_create__running__409(api, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/checks",
        {**ERROR_RATE_CHECK, "name": "late"},
    )
    # Then
    assert response.status_code == 409
    assert "only while it is a draft" in response.json()["message"]
