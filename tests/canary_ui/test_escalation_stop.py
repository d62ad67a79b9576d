"""Stopping automatic escalation (and escalating by hand) through the
command, the API and the admin; each writes one audit event through
``rollout_escalation_stop`` / ``rollout_escalate``."""

from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from canary import services
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary_ui.test_api import _user_with, send
from tests.canary_ui.test_escalate import (  # noqa: F401 (fixtures)
    deployment,
    releases,
    rolled_back,
)


def _stops(rollout):
    return AuditEvent.objects.filter(
        action="rollout.escalation_stopped", target_id=str(rollout.pk)
    )


def test_rollout_stop_escalation_command__running__stopped_and_audited(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True)
    out = StringIO()
    # When
    call_command(
        "rollout", "stop-escalation", str(rollout.pk), "--reason", "by hand", stdout=out
    )
    # Then
    rollout.refresh_from_db()
    assert rollout.auto_escalate is False
    assert out.getvalue().strip() == (
        f"rollout {rollout.pk} running: automatic escalation stopped "
        "(no verification window)"
    )
    event = _stops(rollout).get()
    assert event.details["reason"] == "by hand" and event.actor_id.startswith("cli:")


def test_rollout_stop_escalation_command__aborted__one_line_error(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="x")
    # When
    with pytest.raises(CommandError) as error:
        call_command("rollout", "stop-escalation", str(rollout.pk), stdout=StringIO())
    # Then
    assert str(error.value) == (
        f"rollout {rollout.pk} is aborted: there is nothing to escalate"
    )
    assert not _stops(rollout).exists()


def test_rollout_escalate_command__level_2__run_started(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    out = StringIO()
    # When
    with django_capture_on_commit_callbacks(execute=True):
        call_command("rollout", "escalate", str(rollout.pk), "--level", "2", stdout=out)
    # Then
    assert f"rollout {rollout.pk} escalated: rollback run" in out.getvalue()
    assert "level 2" in out.getvalue()
    assert AuditEvent.objects.filter(
        action="rollout.rollback_escalated", target_id=str(rollout.pk)
    ).exists()


def test_rollout_stop_escalation_api__change_permission__200_and_fields(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True)
    client = Client()
    client.force_login(_user_with("view_rollout", "change_rollout"))
    # When
    response = send(
        client,
        "post",
        f"/api/v1/rollouts/{rollout.pk}/stop-escalation",
        {"reason": "on call decides"},
    )
    # Then
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["auto_escalate"] is False
    assert body["verification_state"] == ""
    assert body["verification"] == {}
    assert _stops(rollout).get().details["reason"] == "on call decides"


def test_rollout_stop_escalation_api__view_permission_only__403_unchanged(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True)
    client = Client()
    client.force_login(_user_with("view_rollout"))
    # When
    response = send(client, "post", f"/api/v1/rollouts/{rollout.pk}/stop-escalation")
    # Then
    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.auto_escalate is True
    assert not _stops(rollout).exists()


def test_rollout_stop_escalation_api__anonymous__401(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = send(Client(), "post", f"/api/v1/rollouts/{rollout.pk}/stop-escalation")
    # Then
    assert response.status_code == 401


def test_rollout_stop_escalation_api__completed__409(rollout_factory):
    # Given
    from tests.canary_ui.conftest import run_to_completion

    rollout = run_to_completion(rollout_factory(started=True))
    client = Client()
    client.force_login(_user_with("view_rollout", "change_rollout"))
    # When
    response = send(client, "post", f"/api/v1/rollouts/{rollout.pk}/stop-escalation")
    # Then
    assert response.status_code == 409, response.content
    assert "nothing to escalate" in response.json()["message"]


def test_rollout_admin_stop_escalation__button_then_gone(rollout_factory):
    # Given
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    rollout = rollout_factory(started=True)
    url = f"/admin/canary/rollout/{rollout.pk}/do/stop-escalation/"
    page = client.get(f"/admin/canary/rollout/{rollout.pk}/change/").content.decode()
    # When
    response = client.post(url, {"reason": "manual only"}, follow=True)
    # Then
    assert url in page
    assert "Stop automatic escalation: rollout" in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.auto_escalate is False
    assert _stops(rollout).get().actor_name == "boss"
    after = client.get(f"/admin/canary/rollout/{rollout.pk}/change/").content.decode()
    assert url not in after
