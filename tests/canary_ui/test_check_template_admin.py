"""Check template admin: listed, shown read-only as a table, created and
versioned through the services; dry-run checks marked on the rollout page."""

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

ADMIN = "/admin/canary/checktemplate/"


@pytest.fixture
def admin_client(db) -> Client:
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    return client


@pytest.fixture
def template(db) -> CheckTemplate:
    return services.check_template_create(
        actor=SYSTEM,
        name="payments",
        description="pay",
        checks=[
            ERROR_RATE_CHECK,
            {**ERROR_RATE_CHECK, "name": "shadow", "dry_run": True},
        ],
    )


def test_check_template_admin__list_and_page__table_no_raw_json(admin_client, template):
    # When
    listed = admin_client.get(ADMIN)
    page = admin_client.get(f"{ADMIN}{template.pk}/change/")
    # Then
    assert listed.status_code == 200 and b"payments" in listed.content
    assert page.status_code == 200
    html = page.content.decode()
    assert "<th>dry run</th>" in html
    assert "<td>shadow</td><td>yes</td>" in html
    assert "<td>error_rate</td><td>no</td>" in html
    assert "metric=error_rate" in html
    assert '"provider"' not in html  # checks shown as a table, not JSON
    assert 'name="checks"' not in html  # read-only: no editable field
    assert f"{template.pk}/new-version/" in html


def test_check_template_admin__add__created_through_service(admin_client):
    # When
    response = admin_client.post(
        f"{ADMIN}add/",
        {
            "name": "payments",
            "description": "pay",
            "checks": json.dumps([ERROR_RATE_CHECK]),
        },
    )
    # Then
    assert response.status_code == 302
    template = CheckTemplate.objects.get()
    assert template.reference == "payments@1"
    event = AuditEvent.objects.get(action="check_template.created")
    assert event.actor_name == "boss"


@pytest.mark.parametrize(
    "checks, message",
    [
        ("not json", "JSON"),
        (json.dumps([{**ERROR_RATE_CHECK, "threshold": "x"}]), "checks[0].threshold"),
    ],
)
def test_check_template_admin__add_bad_checks__form_error_nothing_created(
    admin_client, checks, message
):
    # When
    response = admin_client.post(f"{ADMIN}add/", {"name": "payments", "checks": checks})
    # Then
    assert response.status_code == 200
    assert message in response.content.decode()
    assert not CheckTemplate.objects.exists()


def test_check_template_admin__new_version_and_archive__through_services(
    admin_client, template
):
    # When
    form = admin_client.get(f"{ADMIN}{template.pk}/new-version/")
    saved = admin_client.post(
        f"{ADMIN}{template.pk}/new-version/",
        {
            "name": "ignored",
            "description": "v2",
            "checks": json.dumps([ERROR_RATE_CHECK]),
        },
    )
    confirm = admin_client.get(f"{ADMIN}{template.pk}/archive/")
    archived = admin_client.post(f"{ADMIN}{template.pk}/archive/")
    # Then
    assert form.status_code == 200 and "shadow" in form.content.decode()
    assert saved.status_code == 302
    second = CheckTemplate.objects.get(version=2)
    assert second.name == "payments" and second.description == "v2"
    assert confirm.status_code == 200 and b"Archive payments@1?" in confirm.content
    assert archived.status_code == 302
    template.refresh_from_db()
    assert template.archived is True
    assert services.check_template_get("payments").version == 2
    assert list(
        AuditEvent.objects.filter(target_type="canary.checktemplate")
        .order_by("id")
        .values_list("action", "actor_name")
    ) == [
        ("check_template.created", "system"),
        ("check_template.version_created", "boss"),
        ("check_template.archived", "boss"),
    ]


def test_check_template_admin__view_only_user__no_new_version(db, template):
    # Given
    user = User.objects.create_user("viewer", password="x", is_staff=True)
    user.user_permissions.add(Permission.objects.get(codename="view_checktemplate"))
    client = Client()
    client.force_login(user)
    # When
    page = client.get(f"{ADMIN}{template.pk}/change/")
    posted = client.post(
        f"{ADMIN}{template.pk}/new-version/",
        {"description": "", "checks": json.dumps([ERROR_RATE_CHECK])},
    )
    archive = client.post(f"{ADMIN}{template.pk}/archive/")
    add = client.get(f"{ADMIN}add/")
    # Then
    assert page.status_code == 200
    assert posted.status_code == 403 and archive.status_code == 403
    assert add.status_code == 403
    assert CheckTemplate.objects.count() == 1
    template.refresh_from_db()
    assert template.archived is False


def test_rollout_admin__add_with_check_template_and_dry_run_inline(
    admin_client, template, flag, merchants
):
    # When
    created = admin_client.post(
        "/admin/canary/rollout/add/",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": "m-1001",
            "check_template": "payments",
            "checks": "",
        },
    )
    rollout = Rollout.objects.get()
    page = admin_client.get(f"/admin/canary/rollout/{rollout.pk}/change/")
    # Then
    assert created.status_code == 302
    assert rollout.check_template == "payments@1"
    html = page.content.decode()
    assert "payments@1" in html
    assert "no (dry run)" in html


def test_rollout_admin__add_unknown_check_template__form_error(
    admin_client, flag, merchants
):
    # When
    response = admin_client.post(
        "/admin/canary/rollout/add/",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": "m-1001",
            "check_template": "nope",
        },
    )
    # Then
    assert response.status_code == 200
    assert "unknown check template" in response.content.decode()
    assert not Rollout.objects.exists()


def test_rollout_admin__add_without_checks__default_template_compare_rules(
    admin_client, flag, merchants
):
    # When
    created = admin_client.post(
        "/admin/canary/rollout/add/",
        {
            "flag": flag.key,
            "environment": "production",
            "template": "pilot-10-50-100",
            "pilot_merchants": "m-1001",
            "checks": "",
        },
    )
    rollout = Rollout.objects.get()
    page = admin_client.get(f"/admin/canary/rollout/{rollout.pk}/change/")
    # Then
    assert created.status_code == 302
    assert rollout.check_template == "default@0"
    html = page.content.decode()
    assert "not worse by 0.01, alpha 0.05" in html
    assert "not worse by 0.1, alpha 0.05" in html
