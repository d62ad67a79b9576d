"""Admin of pending changes: real requests as logged-in superusers, real rows."""

from __future__ import annotations

import datetime as dt
import json

from django.contrib.admin import helpers
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import selectors
from flags.changes import services
from flags.changes.models import ChangeRequest, ScheduledChange
from flags.models import FlagState


def _superuser(name: str) -> Client:
    User.objects.create_superuser(name, f"{name}@example.com", "x")
    client = Client()
    client.login(username=name, password="x")
    return client


def test_flag_state_percentage_action__policy__request_then_admin_approval(
    flag, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, flag_state=1)
    alice_admin, bob_admin = _superuser("alice"), _superuser("bob")
    state = selectors.flag_state_get(flag=flag, environment=production)
    # When: alice sets a percentage through the flags admin action
    sent = alice_admin.post(
        reverse("admin:flags_flagstate_changelist"),
        {
            "action": "set_percentage",
            helpers.ACTION_CHECKBOX_NAME: [state.pk],
            "confirm": "yes",
            "percentage": "12.5",
            "index": 0,
        },
        follow=True,
    )
    change = ChangeRequest.objects.get()
    page = alice_admin.get(
        reverse("admin:changes_changerequest_change", args=[change.pk])
    )
    own = alice_admin.post(
        reverse("admin:changes_changerequest_approve", args=[change.pk]),
        {"comment": ""},
        follow=True,
    )
    approved = bob_admin.post(
        reverse("admin:changes_changerequest_approve", args=[change.pk]),
        {"comment": "fine"},
        follow=True,
    )
    # Then
    texts = [str(m) for m in sent.context["messages"]]
    assert any(f"Change request {change.pk} created" in t for t in texts)
    assert b"Approve" in page.content and b"tone-wait" in page.content
    assert any("author cannot approve" in str(m) for m in own.context["messages"])
    assert any("applied" in str(m) for m in approved.context["messages"])
    state = FlagState.objects.get(pk=state.pk)
    assert state.fallthrough["split"][0]["weight"] == 12_500
    assert AuditEvent.objects.filter(action="change_request.applied").count() == 1


def test_change_request_add_view__bad_arguments__form_error(flag, db):
    # Given
    client = _superuser("alice")
    # When
    response = client.post(
        reverse("admin:changes_changerequest_add"),
        {
            "operation": "flag_state.percentage",
            "arguments": json.dumps(
                {
                    "flag": "checkout_theme",
                    "environment": "production",
                    "percentage": 300,
                }
            ),
        },
    )
    # Then
    assert response.status_code == 200
    assert "between 0 and 100" in str(response.context["form"].errors["arguments"])
    assert not ChangeRequest.objects.exists()


def test_scheduled_change_add_then_cancel(flag, db):
    # Given
    client = _superuser("alice")
    run_at = (timezone.now() + dt.timedelta(hours=1)).strftime("%Y-%m-%d %H:%M:%S")
    # When
    created = client.post(
        reverse("admin:changes_scheduledchange_add"),
        {
            "operation": "flag_state.kill",
            "arguments": json.dumps(
                {"flag": "checkout_theme", "environment": "production"}
            ),
            "run_at": run_at,
        },
    )
    change = ScheduledChange.objects.get()
    listed = client.get(reverse("admin:changes_scheduledchange_changelist"))
    cancelled = client.post(
        reverse("admin:changes_scheduledchange_cancel", args=[change.pk]),
        {"comment": "not tonight"},
    )
    # Then
    assert created.status_code == 302
    assert b"tone-wait" in listed.content and b"scheduled" in listed.content
    assert cancelled.status_code == 302
    change.refresh_from_db()
    assert change.status == "cancelled" and "not tonight" in change.result


def test_scheduled_change_add__past_time__form_error(flag, db):
    client = _superuser("alice")
    response = client.post(
        reverse("admin:changes_scheduledchange_add"),
        {
            "operation": "flag_state.kill",
            "arguments": json.dumps(
                {"flag": "checkout_theme", "environment": "production"}
            ),
            "run_at": "2001-01-01 00:00:00",
        },
    )
    assert response.status_code == 200
    assert "in the future" in str(response.context["form"].errors["run_at"])


def test_approval_policy_admin__saves_through_service(production, db):
    client = _superuser("alice")
    response = client.post(
        reverse("admin:changes_approvalpolicy_add"),
        {
            "environment": production.pk,
            "flag_state_approvals": 2,
            "override_approvals": 1,
            "kill_approvals": 0,
            "rollout_start_approvals": 1,
        },
    )
    assert response.status_code == 302
    assert AuditEvent.objects.filter(action="approval_policy.updated").count() == 1


def test_override_admin_add__policy__refused_with_pointer(
    flag, production, alice, merchant_factory
):
    # Given: the edit form cannot hand back a change request, so it refuses
    services.approval_policy_set(actor=alice, environment=production, override=1)
    merchant = merchant_factory("m-77")
    client = _superuser("alice")
    # When
    response = client.post(
        reverse("admin:flags_merchantoverride_add"),
        {
            "flag": flag.pk,
            "environment": production.pk,
            "merchant": merchant.pk,
            "variation": "on",
            "note": "",
        },
    )
    # Then
    assert response.status_code == 200
    assert "requires 1 approval(s)" in response.content.decode()
    assert not merchant.overrides.exists()
