"""A gated rollout start: change request over the API, applied by approval."""

from __future__ import annotations

import json

from django.contrib.auth.models import Permission, User
from django.test import Client

from canary.models import Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from flags.changes import services
from flags.changes.models import ChangeRequestStatus
from tests.canary_ui.conftest import merchants, rollout_factory  # noqa: F401


def _client(username: str) -> Client:
    user = User.objects.create_user(username, password="x")
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=["change_rollout", "view_rollout", "change_changerequest"]
        )
    )
    client = Client()
    client.force_login(User.objects.get(pk=user.pk))
    return client


def test_rollout_start__policy__202_then_approval_starts_it_once(
    rollout_factory, production, alice
):
    # Given
    services.approval_policy_set(actor=alice, environment=production, rollout_start=1)
    rollout = rollout_factory()
    author, reviewer = _client("alice"), _client("bob")
    # When
    sent = author.post(
        f"/api/v1/rollouts/{rollout.pk}/start",
        data=json.dumps({"reason": "go"}),
        content_type="application/json",
    )
    change_id = sent.json()["change_request"]["id"]
    draft = Rollout.objects.get(pk=rollout.pk).status
    approved = reviewer.post(
        f"/api/v1/change-requests/{change_id}/approve",
        data="{}",
        content_type="application/json",
    )
    again = reviewer.post(
        f"/api/v1/change-requests/{change_id}/approve",
        data="{}",
        content_type="application/json",
    )
    # Then
    assert sent.status_code == 202, sent.content
    assert sent.json()["change_request"]["target"] == f"rollout {rollout.pk}"
    assert draft == RolloutStatus.DRAFT
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == ChangeRequestStatus.APPLIED
    assert Rollout.objects.get(pk=rollout.pk).status == RolloutStatus.RUNNING
    assert again.status_code == 409
    assert (
        AuditEvent.objects.filter(
            action="change_request.applied", target_id=str(change_id)
        ).count()
        == 1
    )
    started = AuditEvent.objects.filter(
        target_id=str(rollout.pk), action__startswith="rollout.", actor_name="alice"
    )
    assert started.exists()
