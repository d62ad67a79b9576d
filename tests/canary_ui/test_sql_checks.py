"""SQL health checks through the API and the admin: their own permission,
field-level refusals, and nothing a query reads in any answer or row.

Replays the hardening report: a user with canary permissions put
``SELECT session_key FROM django_session`` in a check and read an admin
session key in the preflight's 409.
"""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission, User
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client

from canary import services
from canary.controller import controller_tick
from canary.models import CheckRun, HealthCheck, Rollout
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary_ui.conftest import ERROR_RATE_CHECK
from tests.sql_fixtures import READER_ALIAS

SQL_CHECK: dict = {
    "name": "flags",
    "provider": "sql",
    "comparator": "gte",
    "threshold": 0,
    "spec": {"query": "SELECT COUNT(*) FROM flags_flag"},
}


def _canary_user(username: str, *, sql: bool) -> User:
    """A staff user with every canary permission, with or without the sql one."""
    permissions = Permission.objects.filter(content_type__app_label="canary")
    if not sql:
        permissions = permissions.exclude(codename="manage_sql_checks")
    user = User.objects.create_user(username, password="x", is_staff=True)
    user.user_permissions.add(*permissions)
    return User.objects.get(pk=user.pk)


@pytest.fixture
def ops(db) -> Client:
    """Every canary permission but canary.manage_sql_checks."""
    client = Client()
    client.force_login(_canary_user("ops", sql=False))
    return client


@pytest.fixture
def dba(db) -> Client:
    """Every canary permission, canary.manage_sql_checks included."""
    client = Client()
    client.force_login(_canary_user("dba", sql=True))
    return client


@pytest.fixture
def on_default(sql_checks_on) -> None:
    sql_checks_on("default")


def send(client: Client, method: str, url: str, body=None):
    data = json.dumps(body) if body is not None else None
    return getattr(client, method)(url, data=data, content_type="application/json")


def _create_body(*checks: dict) -> dict:
    return {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "demo-fast",
        "pilot_merchants": ["m-1001"],
        "checks": list(checks),
    }


def _everything_stored() -> str:
    """Every check run, audit event and health check, as one text."""
    rows = [
        *CheckRun.objects.values(),
        *AuditEvent.objects.values(),
        *HealthCheck.objects.values(),
    ]
    return json.dumps(rows, default=str)


def _admin_session_key() -> str:
    admin = User.objects.create_superuser("root", password="x")
    session = SessionStore()
    session["_auth_user_id"] = str(admin.pk)
    session.create()
    return session.session_key


# -- the permission -----------------------------------------------------------


def test_permission__manage_sql_checks__exists_apart_from_rollout_ones(db):
    # When
    permission = Permission.objects.get(codename="manage_sql_checks")
    # Then
    assert permission.content_type.app_label == "canary"
    assert permission.content_type.model == "healthcheck"


def test_rollout_create_api__sql_check_without_manage_sql_checks__403_nothing(
    ops, flag, merchants, on_default
):
    # When
    response = send(ops, "post", "/api/v1/rollouts", _create_body(SQL_CHECK))
    # Then
    assert response.status_code == 403
    body = response.json()
    assert body["code"] == "permission_denied"
    assert "canary.manage_sql_checks" in body["message"]
    assert not Rollout.objects.exists()


def test_rollout_create_api__outcomes_check_without_manage_sql_checks__201(
    ops, flag, merchants
):
    # When
    response = send(ops, "post", "/api/v1/rollouts", _create_body(ERROR_RATE_CHECK))
    # Then
    assert response.status_code == 201, response.json()
    assert Rollout.objects.get().checks.get().provider == "outcomes"


def test_rollout_create_api__sql_check_with_manage_sql_checks__201(
    dba, flag, merchants, on_default
):
    # When
    response = send(dba, "post", "/api/v1/rollouts", _create_body(SQL_CHECK))
    # Then
    assert response.status_code == 201, response.json()
    check = Rollout.objects.get().checks.get()
    assert check.provider == "sql" and check.spec["database"] == "default"
    assert AuditEvent.objects.get(action="rollout.created").actor_name == "dba"


def test_rollout_checks_add_api__sql_without_permission__403_outcomes_201(
    ops, rollout_factory, on_default
):
    # Given
    rollout = rollout_factory(checks=[])
    url = f"/api/v1/rollouts/{rollout.pk}/checks"
    # When
    refused = send(ops, "post", url, SQL_CHECK)
    allowed = send(ops, "post", url, ERROR_RATE_CHECK)
    # Then
    assert refused.status_code == 403
    assert refused.json()["code"] == "permission_denied"
    assert allowed.status_code == 201, allowed.json()
    assert list(rollout.checks.values_list("provider", flat=True)) == ["outcomes"]
    created = AuditEvent.objects.filter(action="check.created")
    assert [e.after["provider"] for e in created] == ["outcomes"]


def test_rollout_check_update_api__sql_check_without_permission__403_unchanged(
    ops, rollout_factory, on_default
):
    # Given: a draft with a sql check and an outcomes check
    rollout = rollout_factory(checks=[SQL_CHECK, ERROR_RATE_CHECK])
    sql_check = rollout.checks.get(provider="sql")
    other = rollout.checks.get(provider="outcomes")
    base = f"/api/v1/rollouts/{rollout.pk}/checks"
    # When
    changed = send(ops, "patch", f"{base}/{sql_check.pk}", {"threshold": 5})
    into_sql = send(
        ops,
        "patch",
        f"{base}/{other.pk}",
        {"provider": "sql", "spec": SQL_CHECK["spec"], "mode": "absolute"},
    )
    plain = send(ops, "patch", f"{base}/{other.pk}", {"threshold": 0.1})
    # Then
    assert (changed.status_code, into_sql.status_code) == (403, 403)
    assert plain.status_code == 200, plain.json()
    sql_check.refresh_from_db()
    other.refresh_from_db()
    assert sql_check.threshold == 0
    assert (other.provider, other.threshold) == ("outcomes", 0.1)


def test_rollout_check_update_api__sql_check_with_permission__200(
    dba, rollout_factory, on_default
):
    # Given
    rollout = rollout_factory(checks=[SQL_CHECK])
    check = rollout.checks.get()
    # When
    response = send(
        dba,
        "patch",
        f"/api/v1/rollouts/{rollout.pk}/checks/{check.pk}",
        {"threshold": 5},
    )
    # Then
    assert response.status_code == 200, response.json()
    check.refresh_from_db()
    assert check.threshold == 5


def test_rollout_add_admin__sql_check_without_permission__refused(
    ops, flag, merchants, on_default
):
    # Given
    data = {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "demo-fast",
        "pilot_merchants": "m-1001",
        "checks": json.dumps([SQL_CHECK]),
    }
    # When
    refused = ops.post("/admin/canary/rollout/add/", data)
    allowed = ops.post(
        "/admin/canary/rollout/add/", {**data, "checks": json.dumps([ERROR_RATE_CHECK])}
    )
    # Then
    assert refused.status_code == 200
    assert "canary.manage_sql_checks" in refused.content.decode()
    assert allowed.status_code == 302
    assert list(HealthCheck.objects.values_list("provider", flat=True)) == ["outcomes"]


def test_rollout_add_admin__sql_check_with_permission__created(
    dba, flag, merchants, on_default
):
    # When
    response = dba.post(
        "/admin/canary/rollout/add/",
        {
            "flag": "sequential_workflow",
            "environment": "production",
            "template": "demo-fast",
            "pilot_merchants": "m-1001",
            "checks": json.dumps([SQL_CHECK]),
        },
    )
    # Then
    assert response.status_code == 302
    assert Rollout.objects.get().checks.get().provider == "sql"


# -- refused at create time -----------------------------------------------------


def test_rollout_create_api__sql_check_no_alias_configured__400_says_how(
    dba, flag, merchants
):
    # Given: the default settings (CANARY_SQL_DATABASES empty)
    # When
    response = send(dba, "post", "/api/v1/rollouts", _create_body(SQL_CHECK))
    # Then
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["checks[0].spec.database"]
    assert "CANARY_SQL_DATABASES" in errors["checks[0].spec.database"][0]
    assert not Rollout.objects.exists()


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("SELECT pg_advisory_lock(7215)", "pg_advisory_lock"),
        ("SELECT pg_sleep(100)", "pg_sleep"),
        (
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity",
            "pg_terminate_backend",
        ),
        ("SELECT COUNT(*) FROM django_session FOR UPDATE", "FOR UPDATE"),
        ("SELECT 1; SELECT 2", "one statement"),
        ("SELECT " + "(" * 500 + "1" + ")" * 500, "nested too deeply"),
    ],
)
def test_rollout_checks_add_api__dangerous_query__400_on_spec_query(
    dba, rollout_factory, on_default, query, named
):
    # Given
    rollout = rollout_factory(checks=[])
    check = {**SQL_CHECK, "timeout": 100, "spec": {"query": query}}
    # When
    response = send(dba, "post", f"/api/v1/rollouts/{rollout.pk}/checks", check)
    # Then
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert list(errors) == ["spec.query"]
    assert named in errors["spec.query"][0]
    assert not rollout.checks.exists()


# -- nothing read leaks ---------------------------------------------------------


def test_rollout_start_api__session_key_query_on_default__409_without_the_key(
    dba, flag, merchants, on_default
):
    # Given: an admin session, and a check selecting session keys (it passes
    # the parser: no function is called)
    key = _admin_session_key()
    check = {
        **SQL_CHECK,
        "spec": {"query": "SELECT session_key FROM django_session LIMIT 1"},
    }
    created = send(dba, "post", "/api/v1/rollouts", _create_body(check))
    assert created.status_code == 201, created.json()
    rollout_id = created.json()["id"]
    # When
    response = send(dba, "post", f"/api/v1/rollouts/{rollout_id}/start", {})
    # Then
    assert response.status_code == 409
    assert "check flags did not answer" in response.json()["message"]
    assert "is text, not a number" in response.json()["message"]
    assert key not in response.content.decode()
    assert key not in _everything_stored()


@pytest.mark.postgres
def test_rollout_start_api__cast_echoes_session_key__409_sqlstate_only(
    dba, flag, merchants, on_default
):
    # Given: PostgreSQL quotes the value it cannot cast in its message
    key = _admin_session_key()
    query = "SELECT CAST(session_key AS integer) FROM django_session LIMIT 1"
    created = send(
        dba,
        "post",
        "/api/v1/rollouts",
        _create_body({**SQL_CHECK, "spec": {"query": query}}),
    )
    assert created.status_code == 201, created.json()
    # When
    response = send(dba, "post", f"/api/v1/rollouts/{created.json()['id']}/start", {})
    # Then
    assert response.status_code == 409
    assert (
        "database error 22P02 invalid_text_representation"
        in (response.json()["message"])
    )
    assert key not in response.content.decode()
    assert key not in _everything_stored()


@pytest.mark.postgres
def test_controller_tick__cast_echoes_session_key__check_run_and_api_without_it(
    dba, rollout_factory, on_default
):
    # Given: a running rollout (started past the preflight) whose check
    # makes PostgreSQL quote a session key in its error message
    key = _admin_session_key()
    query = "SELECT CAST(session_key AS integer) FROM django_session LIMIT 1"
    rollout = rollout_factory(checks=[{**SQL_CHECK, "spec": {"query": query}}])
    services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    # When: the controller measures it three times (the error limit)
    for _ in range(4):
        HealthCheck.objects.filter(rollout=rollout).update(next_due_at=None)
        controller_tick()
    runs = send(dba, "get", f"/api/v1/rollouts/{rollout.pk}/check-runs")
    page = dba.get("/admin/canary/checkrun/")
    # Then
    assert CheckRun.objects.filter(verdict="error").count() >= 3
    run = CheckRun.objects.first()
    assert "22P02 invalid_text_representation" in run.detail["error"]
    assert AuditEvent.objects.filter(action="check.errored").exists()
    assert key not in runs.content.decode()
    assert key not in page.content.decode()
    assert key not in _everything_stored()


@pytest.mark.postgres
@pytest.mark.django_db(databases=["default", READER_ALIAS])
def test_rollout_start_api__session_key_query_on_reader__409_insufficient_privilege(
    dba, flag, merchants, sql_reader, sql_checks_on
):
    # Given: SQL checks go to the read-only role's alias, as in production
    sql_checks_on(sql_reader)
    key = _admin_session_key()
    check = {
        **SQL_CHECK,
        "spec": {"query": "SELECT session_key FROM django_session LIMIT 1"},
    }
    created = send(dba, "post", "/api/v1/rollouts", _create_body(check))
    assert created.status_code == 201, created.json()
    assert Rollout.objects.get().checks.get().spec["database"] == READER_ALIAS
    # When
    response = send(dba, "post", f"/api/v1/rollouts/{created.json()['id']}/start", {})
    # Then
    assert response.status_code == 409
    assert "database error 42501 insufficient_privilege" in response.json()["message"]
    assert key not in response.content.decode()
    assert key not in _everything_stored()
