"""Check template API, rollout create with a template, baselines and dry-run
checks over the Django test client (real database)."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client

from canary import services
from canary.models import CheckTemplate, Rollout
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary_ui.conftest import ERROR_RATE_CHECK

SQL_CHECK = {
    "name": "orphans",
    "provider": "sql",
    "spec": {"query": "SELECT 0"},
    "comparator": "eq",
    "threshold": 0,
}


def _user_with(*codenames: str, username: str = "ops") -> User:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return User.objects.get(pk=user.pk)


def _client(*codenames: str, username: str = "ops") -> Client:
    client = Client()
    client.force_login(_user_with(*codenames, username=username))
    return client


ALL = [
    f"{action}_{model}"
    for model in ("checktemplate", "rollout", "healthcheck")
    for action in ("view", "add", "change")
]


@pytest.fixture
def api(db) -> Client:
    return _client(*ALL)


def send(client: Client, method: str, url: str, body=None):
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(url, data=data, content_type="application/json")


def test_check_templates__create_version_archive__each_audited(api):
    # When
    created = send(
        api,
        "post",
        "/api/v1/check-templates",
        {"name": "payments", "description": "pay", "checks": [ERROR_RATE_CHECK]},
    )
    version = send(
        api,
        "post",
        "/api/v1/check-templates/payments/versions",
        {"checks": [{**ERROR_RATE_CHECK, "dry_run": True}]},
    )
    same = send(
        api,
        "post",
        "/api/v1/check-templates/payments/versions",
        {"checks": [{**ERROR_RATE_CHECK, "dry_run": True}]},
    )
    latest = api.get("/api/v1/check-templates/payments")
    first = api.get("/api/v1/check-templates/payments/versions/1")
    versions = api.get("/api/v1/check-templates/payments/versions")
    archived = send(
        api, "post", "/api/v1/check-templates/payments/archive", {"version": 2}
    )
    after = api.get("/api/v1/check-templates/payments")
    listed = api.get("/api/v1/check-templates")
    # Then
    assert created.status_code == 201, created.content
    assert created.json()["reference"] == "payments@1"
    assert version.status_code == 201 and version.json()["version"] == 2
    assert version.json()["checks"][0]["dry_run"] is True
    assert version.json()["description"] == "pay"
    assert same.status_code == 200 and same.json()["version"] == 2
    assert latest.json()["version"] == 2
    assert first.json()["checks"][0]["dry_run"] is False
    assert [v["version"] for v in versions.json()] == [2, 1]
    assert archived.status_code == 200
    assert [t["reference"] for t in archived.json()] == ["payments@2"]
    assert after.json()["version"] == 1
    names = {t["name"]: t for t in listed.json()["results"]}
    assert names["payments"]["version"] == 1
    assert names["default"]["is_builtin"] is True
    actions = list(
        AuditEvent.objects.filter(target_type="canary.checktemplate")
        .order_by("id")
        .values_list("action", "actor_name")
    )
    assert actions == [
        ("check_template.created", "ops"),
        ("check_template.version_created", "ops"),
        ("check_template.archived", "ops"),
    ]


@pytest.mark.parametrize(
    "url, body, status, field",
    [
        ("/api/v1/check-templates", {"name": "x!", "checks": []}, 400, "name"),
        ("/api/v1/check-templates", {"name": "x", "checks": []}, 400, "checks"),
        (
            "/api/v1/check-templates",
            {"name": "x", "checks": [{**ERROR_RATE_CHECK, "dry_run": 1}]},
            400,
            "checks[0].dry_run",
        ),
        ("/api/v1/check-templates", {"checks": []}, 400, "name"),
        (
            "/api/v1/check-templates/nope/versions",
            {"checks": [ERROR_RATE_CHECK]},
            404,
            None,
        ),
        ("/api/v1/check-templates/nope/archive", {}, 404, None),
        ("/api/v1/check-templates/payments/archive", {"version": 0}, 400, "version"),
        (
            "/api/v1/check-templates",
            {"name": "payments", "checks": [ERROR_RATE_CHECK]},
            409,
            None,
        ),
    ],
)
def test_check_templates__bad_input__error_status_and_nothing_written(
    api, url, body, status, field
):
    # Given
    services.check_template_create(
        actor=SYSTEM, name="payments", checks=[ERROR_RATE_CHECK]
    )
    before = AuditEvent.objects.count()
    # When
    response = send(api, "post", url, body)
    # Then
    assert response.status_code == status, response.content
    if field:
        assert field in response.json()["errors"]
    assert AuditEvent.objects.count() == before
    assert CheckTemplate.objects.count() == 1


def test_check_templates__unknown_version__404(api):
    # When
    response = api.get("/api/v1/check-templates/default/versions/3")
    builtin = api.get("/api/v1/check-templates/default/versions/0")
    # Then
    assert response.status_code == 404
    assert builtin.status_code == 200 and builtin.json()["version"] == 0


def test_check_templates__permissions__anonymous_401_view_only_403(db):
    # Given
    viewer = _client("view_checktemplate")
    body = {"name": "payments", "checks": [ERROR_RATE_CHECK]}
    # When
    anonymous = Client().get("/api/v1/check-templates")
    listed = viewer.get("/api/v1/check-templates")
    created = send(viewer, "post", "/api/v1/check-templates", body)
    # Then
    assert anonymous.status_code == 401
    assert listed.status_code == 200
    assert created.status_code == 403
    assert not CheckTemplate.objects.exists()


def test_check_templates__sql_check_without_sql_permission__403(api, sql_checks_on):
    sql_checks_on("default")
    # When
    response = send(
        api,
        "post",
        "/api/v1/check-templates",
        {"name": "db", "checks": [SQL_CHECK]},
    )
    # Then
    assert response.status_code == 403
    assert "manage_sql_checks" in response.json()["message"]
    assert not CheckTemplate.objects.exists()


def test_rollout_create__check_template_with_sql_check__403_without_permission(
    api, flag, merchants, sql_checks_on
):
    # Given: a template with a sql check, created by someone allowed to
    sql_checks_on("default")
    services.check_template_create(actor=SYSTEM, name="db", checks=[SQL_CHECK])
    # When
    response = send(
        api,
        "post",
        "/api/v1/rollouts",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": ["m-1001"],
            "check_template": "db",
        },
    )
    # Then
    assert response.status_code == 403
    assert not Rollout.objects.exists()


def test_rollout_create__check_template__201_checks_from_template(api, flag, merchants):
    # Given
    services.check_template_create(
        actor=SYSTEM, name="payments", checks=[{**ERROR_RATE_CHECK, "dry_run": True}]
    )
    # When
    response = send(
        api,
        "post",
        "/api/v1/rollouts",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": ["m-1001"],
            "check_template": "payments@1",
        },
    )
    unknown = send(
        api,
        "post",
        "/api/v1/rollouts",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": ["m-1001"],
            "check_template": "payments@9",
        },
    )
    # Then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["check_template"] == "payments@1"
    assert [(c["name"], c["dry_run"]) for c in body["checks"]] == [("error_rate", True)]
    assert unknown.status_code == 404
    assert Rollout.objects.count() == 1


def test_rollout_checks__dry_run_by_api__created_and_patched(api, rollout_factory):
    # Given
    rollout = rollout_factory(checks=[])
    # When
    created = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/checks",
        {**ERROR_RATE_CHECK, "dry_run": True},
    )
    patched = send(
        api,
        "patch",
        f"/api/v1/rollouts/{rollout.pk}/checks/{created.json()['id']}",
        {"dry_run": False},
    )
    bad = send(
        api,
        "patch",
        f"/api/v1/rollouts/{rollout.pk}/checks/{created.json()['id']}",
        {"dry_run": "no"},
    )
    # Then
    assert created.status_code == 201 and created.json()["dry_run"] is True
    assert patched.status_code == 200 and patched.json()["dry_run"] is False
    assert bad.status_code == 400 and "dry_run" in bad.json()["errors"]


def test_rollout_baseline__api__recorded_and_audited(api, rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    response = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/baseline",
        {"baseline": {"error_rate": 0.012}},
    )
    # Then
    assert response.status_code == 200, response.content
    assert response.json()["baseline"] == {"error_rate": 0.012}
    rollout.refresh_from_db()
    assert rollout.baseline == {"error_rate": 0.012}
    event = AuditEvent.objects.get(action="rollout.baseline_set")
    assert event.actor_name == "ops" and event.after == {"error_rate": 0.012}


@pytest.mark.parametrize(
    "body, status, field",
    [
        ({"baseline": {"nope": 1}}, 400, "baseline.nope"),
        ({"baseline": {"error_rate": "high"}}, 400, "baseline.error_rate"),
        ({"baseline": {"error_rate": True}}, 400, "baseline.error_rate"),
        ({"baseline": [1]}, 400, "baseline"),
        ({}, 400, "baseline"),
    ],
)
def test_rollout_baseline__bad_input__400_and_unchanged(
    api, rollout_factory, body, status, field
):
    # Given
    rollout = rollout_factory()
    # When
    response = send(api, "post", f"/api/v1/rollouts/{rollout.pk}/baseline", body)
    # Then
    assert response.status_code == status, response.content
    assert field in response.json()["errors"]
    rollout.refresh_from_db()
    assert rollout.baseline == {}
    assert not AuditEvent.objects.filter(action="rollout.baseline_set").exists()


def test_rollout_baseline__started__409(api, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(
        api,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/baseline",
        {"baseline": {"error_rate": 0.01}},
    )
    # Then
    assert response.status_code == 409


def test_openapi_schema__check_templates_and_baseline__documented(api):
    # When
    response = api.get("/api/schema/", HTTP_ACCEPT="application/json")
    # Then
    assert response.status_code == 200
    paths = json.loads(response.content)["paths"]
    assert "/api/v1/check-templates" in paths
    assert "/api/v1/check-templates/{name}/versions/{version}" in paths
    assert "/api/v1/check-templates/{name}/archive" in paths
    assert "/api/v1/rollouts/{id}/baseline" in paths


def test_check_templates__sql_check_with_sql_permission__201(db, sql_checks_on):
    # Given
    sql_checks_on("default")
    client = _client(*ALL, "manage_sql_checks", username="dba")
    # When
    response = send(
        client,
        "post",
        "/api/v1/check-templates",
        {"name": "db", "checks": [SQL_CHECK]},
    )
    # Then
    assert response.status_code == 201, response.content
    assert response.json()["checks"][0]["provider"] == "sql"
