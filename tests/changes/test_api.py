"""Change-management API over real HTTP (Django test client), real database."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import selectors
from flags.changes import services
from flags.changes.models import ChangeRequest

PERMS = [
    "view_changerequest",
    "add_changerequest",
    "change_changerequest",
    "view_scheduledchange",
    "add_scheduledchange",
    "change_scheduledchange",
    "view_approvalpolicy",
    "change_approvalpolicy",
    "add_approvalpolicy",
    "change_flagstate",
    "view_flagstate",
    "change_merchantoverride",
    "add_merchantoverride",
    "delete_merchantoverride",
    "change_rollout",
]


def _client(username: str) -> Client:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=PERMS))
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def _post(client: Client, url: str, body=None, method: str = "post"):
    return getattr(client, method)(
        url, data=json.dumps(body or {}), content_type="application/json"
    )


@pytest.fixture
def alice_api(db) -> Client:
    return _client("alice")


@pytest.fixture
def bob_api(db) -> Client:
    return _client("bob")


@pytest.fixture
def carol_api(db) -> Client:
    return _client("carol")


URL = "/api/v1/flags/checkout_theme/environments/production/percentage"


def test_gated_percentage__policy__202_then_two_approvals_apply(
    flag, production, alice_api, bob_api, carol_api
):
    # Given
    policy = _post(
        alice_api,
        "/api/v1/approval-policies/production",
        {"flag_state_approvals": 2},
        method="patch",
    )
    # When
    sent = _post(alice_api, URL, {"percentage": 15})
    change_id = sent.json()["change_request"]["id"]
    own = _post(alice_api, f"/api/v1/change-requests/{change_id}/approve")
    first = _post(bob_api, f"/api/v1/change-requests/{change_id}/approve")
    second = _post(
        carol_api, f"/api/v1/change-requests/{change_id}/approve", {"comment": "ok"}
    )
    # Then
    assert policy.status_code == 200 and policy.json()["flag_state_approvals"] == 2
    assert sent.status_code == 202, sent.content
    assert "needs 2 approval(s)" in sent.json()["detail"]
    assert own.status_code == 403
    assert own.json()["errors"] == {"reviewer": [own.json()["message"]]}
    assert first.status_code == 200 and first.json()["status"] == "pending"
    assert second.status_code == 200 and second.json()["status"] == "applied"
    assert second.json()["approvals"] == 2
    state = selectors.flag_state_get(flag=flag, environment=production)
    assert state.fallthrough["split"][0]["weight"] == 15_000
    assert AuditEvent.objects.filter(action="change_request.applied").count() == 1


def test_gated_kill__kills_immediate_by_default__200(flag, alice_api):
    # Given
    _post(
        alice_api,
        "/api/v1/approval-policies/production",
        {"flag_state_approvals": 2},
        method="patch",
    )
    # When
    response = _post(
        alice_api, "/api/v1/flags/checkout_theme/environments/production/kill"
    )
    # Then
    assert response.status_code == 200
    assert response.json()["killed_at"] is not None


def test_change_request_create__then_list_and_cancel(flag, alice_api, bob_api):
    # Given
    created = _post(
        alice_api,
        "/api/v1/change-requests",
        {
            "operation": "flag_state.serve",
            "arguments": {
                "flag": "checkout_theme",
                "environment": "production",
                "variation": "on",
            },
            "reason": "launch",
        },
    )
    pk = created.json()["id"]
    # When
    listed = alice_api.get("/api/v1/change-requests?status=pending")
    by_other = _post(bob_api, f"/api/v1/change-requests/{pk}/cancel")
    cancelled = _post(alice_api, f"/api/v1/change-requests/{pk}/cancel")
    # Then
    assert created.status_code == 201 and created.json()["required_approvals"] == 1
    assert [item["id"] for item in listed.json()["results"]] == [pk]
    assert by_other.status_code == 403
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"


@pytest.mark.parametrize(
    "body, field",
    [
        ({"operation": "flag_state.explode", "arguments": {}}, "operation"),
        (
            {
                "operation": "flag_state.serve",
                "arguments": {
                    "flag": "checkout_theme",
                    "environment": "production",
                    "variation": "o\x00n",
                },
            },
            "arguments.variation",
        ),
        (
            {
                "operation": "flag_state.percentage",
                "arguments": {
                    "flag": "checkout_theme",
                    "environment": "production",
                    "percentage": 10**400,
                },
            },
            None,
        ),
        (
            {
                "operation": "flag_state.percentage",
                "arguments": {
                    "flag": "checkout_theme",
                    "environment": "production",
                    "percentage": 1e300,
                },
            },
            "arguments.percentage",
        ),
        ({"operation": "flag_state.serve", "arguments": [1, 2]}, "arguments"),
        (
            {"operation": "rollout.start", "arguments": {"rollout": 10**20}},
            "arguments.rollout",
        ),
        (
            {
                "operation": "flag_state.serve",
                "arguments": {"flag": "checkout_theme", "environment": "production"},
                "version": 10**12,
            },
            "version",
        ),
        ({"operation": "x" * 1000, "arguments": {}}, "operation"),
    ],
)
def test_change_request_create__bad_input__400_with_field(flag, alice_api, body, field):
    # When
    response = alice_api.post(
        "/api/v1/change-requests",
        data=json.dumps(body).replace("1" + "0" * 400, "1e999")
        if field is None
        else json.dumps(body),
        content_type="application/json",
    )
    # Then
    assert response.status_code == 400, response.content
    if field:
        assert field in response.json()["errors"], response.json()
    assert not ChangeRequest.objects.exists()


def _schedule_body(seconds: float, **extra):
    return {
        "operation": "flag_state.percentage",
        "arguments": {
            "flag": "checkout_theme",
            "environment": "production",
            "percentage": 35,
        },
        "run_at": (timezone.now() + dt.timedelta(seconds=seconds)).isoformat(),
        **extra,
    }


def test_scheduled_change__create_list_cancel(flag, alice_api):
    # Given
    created = _post(alice_api, "/api/v1/scheduled-changes", _schedule_body(3600))
    pk = created.json()["id"]
    # When
    listed = alice_api.get("/api/v1/scheduled-changes")
    cancelled = _post(alice_api, f"/api/v1/scheduled-changes/{pk}/cancel")
    again = _post(alice_api, f"/api/v1/scheduled-changes/{pk}/cancel")
    # Then
    assert created.status_code == 201 and created.json()["status"] == "scheduled"
    assert created.json()["based_on_version"] == 1
    assert [item["id"] for item in listed.json()["results"]] == [pk]
    assert cancelled.json()["status"] == "cancelled"
    assert again.status_code == 409
    assert AuditEvent.objects.filter(action="scheduled_change.cancelled").count() == 1


@pytest.mark.parametrize(
    "body, field",
    [
        (_schedule_body(-60), "run_at"),
        (_schedule_body(3600 * 24 * 400), "run_at"),
        ({**_schedule_body(60), "run_at": "tomorrow\x00"}, "run_at"),
        ({**_schedule_body(60), "run_at": "99999-01-01T00:00:00Z"}, "run_at"),
        ({**_schedule_body(60), "operation": "rm -rf"}, "operation"),
    ],
)
def test_scheduled_change_create__bad_input__400_with_field(
    flag, alice_api, body, field
):
    # When
    response = _post(alice_api, "/api/v1/scheduled-changes", body)
    # Then
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"]


def test_scheduled_change_create__without_flag_permission__403(flag, db):
    # Given: may schedule, may not change flag states
    user = User.objects.create_user("eve", password="x")
    user.user_permissions.add(
        *Permission.objects.filter(codename__in=["add_scheduledchange"])
    )
    client = Client()
    client.force_login(user)
    # When
    response = _post(client, "/api/v1/scheduled-changes", _schedule_body(60))
    # Then
    assert response.status_code == 403
    assert "flags.change_flagstate" in response.json()["message"]


def test_unknown_ids__404(db, alice_api):
    assert alice_api.get("/api/v1/change-requests/999999").status_code == 404
    huge = _post(alice_api, f"/api/v1/change-requests/{10**30}/approve")
    assert huge.status_code == 404


def test_schema__lists_the_change_endpoints(db, alice_api):
    # When
    schema = alice_api.get("/api/schema/?format=json").json()
    # Then
    assert "/api/v1/change-requests/{id}/approve" in schema["paths"]
    assert "/api/v1/scheduled-changes" in schema["paths"]
    percentage = schema["paths"]["/api/v1/flags/{key}/environments/{env}/percentage"][
        "post"
    ]
    assert "202" in percentage["responses"]


def test_service_and_api_agree__scheduled_due_applies(flag, production, alice_api):
    # Given
    created = _post(alice_api, "/api/v1/scheduled-changes", _schedule_body(30))
    assert created.status_code == 201, created.content
    # When
    services.scheduled_changes_apply_due(
        actor=_actor(), now=timezone.now() + dt.timedelta(seconds=31)
    )
    # Then
    detail = alice_api.get(f"/api/v1/scheduled-changes/{created.json()['id']}")
    assert detail.json()["status"] == "applied"
    assert detail.json()["applied_at"] is not None


def _actor():
    from controlplane.audit.actors import SYSTEM

    return SYSTEM


STATE = "/api/v1/flags/checkout_theme/environments/production"


@pytest.mark.parametrize(
    "method, path, body, operation",
    [
        ("post", "/enable", {}, "flag_state.enable"),
        ("post", "/disable", {}, "flag_state.disable"),
        ("post", "/serve", {"variation": "on"}, "flag_state.serve"),
        ("patch", "", {"version": 1, "bucket_by": "account"}, "flag_state.update"),
        ("post", "/kill", {"reason": "x"}, "flag_state.kill"),
        ("put", "/overrides/m-9", {"variation": "on"}, "override.set"),
        ("delete", "/overrides/m-9", None, "override.remove"),
    ],
)
def test_gated_endpoints__strict_policy__202_and_nothing_changed(
    flag, production, alice, alice_api, merchant_factory, method, path, body, operation
):
    # Given: an override to remove, then a policy asking approval for everything
    from flags import services as flag_services

    merchant = merchant_factory("m-9")
    flag_services.override_set(
        actor=alice,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="off",
    )
    services.approval_policy_set(
        actor=alice, environment=production, flag_state=1, override=1, kill=1
    )
    before = selectors.flag_state_get(flag=flag, environment=production).version
    # When
    if body is None:
        response = getattr(alice_api, method)(STATE + path)
    else:
        response = _post(alice_api, STATE + path, body, method=method)
    # Then
    assert response.status_code == 202, response.content
    assert response.json()["change_request"]["operation"] == operation
    assert selectors.flag_state_get(flag=flag, environment=production).version == before
    assert merchant.overrides.get().variation == "off"
