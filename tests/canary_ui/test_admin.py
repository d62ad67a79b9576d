"""Rollout admin: buttons with confirmation pages call the services as the
admin user; the page explains decisions and shows the latest check runs."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client

from canary import services
from canary.models import Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags.models import MerchantOverride
from tests.canary_ui.conftest import record

Status = RolloutStatus


@pytest.fixture
def admin_client(db) -> Client:
    User.objects.create_superuser("boss", password="x")
    client = Client()
    client.login(username="boss", password="x")
    return client


def action_url(rollout: Rollout, action: str) -> str:
    return f"/admin/canary/rollout/{rollout.pk}/do/{action}/"


def transitions(rollout: Rollout) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(
            action="rollout.transition", target_id=str(rollout.pk)
        ).order_by("id")
    )


def test_rollout_change_page__running_with_runs__buttons_explanation_and_runs(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.0123, message="0.0123 < 0.05: pass")
    services.rollout_pause(
        rollout_id=rollout.pk,
        actor=SYSTEM,
        reason="check error_rate is inconclusive: 4 results exceed limit 3",
    )
    # When
    page = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/change/"
    ).content.decode()
    # Then
    assert "check error_rate is inconclusive: 4 results exceed limit 3" in page
    assert "0.0123 &lt; 0.05: pass" in page
    assert (
        "<strong>rollout.transition</strong> by system:system" in page
    )  # last decision
    assert action_url(rollout, "resume") in page
    assert action_url(rollout, "rollback") in page
    assert action_url(rollout, "start") not in page
    assert "pilot" in page and "error_rate" in page  # phase and check inlines


def test_rollout_approve_button__confirm_then_post__approved_by_admin(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    services.rollout_transition(
        rollout_id=rollout.pk,
        to=Status.AWAITING_APPROVAL,
        actor=SYSTEM,
        reason="phase 0 requires approval",
    )
    # When
    confirm = admin_client.get(action_url(rollout, "approve"))
    done = admin_client.post(action_url(rollout, "approve"), {"reason": "pilot fine"})
    # Then
    assert confirm.status_code == 200 and "Yes, approve" in confirm.content.decode()
    assert done.status_code == 302
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING and rollout.approved_phase == 0
    event = AuditEvent.objects.get(action="rollout.approved")
    assert (event.actor_type, event.actor_name) == ("user", "boss")


def test_rollout_pause_button__get_only__nothing_changes(admin_client, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    page = admin_client.get(action_url(rollout, "pause"))
    # Then
    assert "Yes, pause" in page.content.decode()
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING


def test_rollout_pause_button__post_with_reason__paused_and_audited(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = admin_client.post(
        action_url(rollout, "pause"), {"reason": "incident 42"}
    )
    # Then
    assert response.status_code == 302
    rollout.refresh_from_db()
    assert rollout.status == Status.PAUSED and rollout.pause_reason == "incident 42"
    last = transitions(rollout)[-1]
    assert last.actor_name == "boss" and last.details["reason"] == "incident 42"


def test_rollout_pause_button__no_reason__form_error_and_unchanged(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    # When
    response = admin_client.post(action_url(rollout, "pause"), {"reason": ""})
    # Then
    assert response.status_code == 200
    assert "This field is required" in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING


def test_rollout_abort_button__post__aborted_flag_restored(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    # When
    admin_client.post(action_url(rollout, "abort"), {"reason": "wrong merchant"})
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.ABORTED
    assert not MerchantOverride.objects.exists()
    assert transitions(rollout)[-1].actor_name == "boss"


def test_rollout_rollback_button__level_1__rolling_back_by_admin(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory(started=True)
    # When
    confirm = admin_client.get(action_url(rollout, "rollback")).content.decode()
    admin_client.post(action_url(rollout, "rollback"), {"reason": "red", "level": "1"})
    # Then
    assert "migration revert" in confirm  # the level choice
    rollout.refresh_from_db()
    assert rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    event = [e for e in transitions(rollout) if e.details["to"] == "rolling_back"][0]
    assert event.actor_name == "boss" and event.details["level"] == 1


def test_rollout_resume_button__running__refused_message_unchanged(
    admin_client, rollout_factory
):
    # Given
    rollout = rollout_factory()
    # When
    response = admin_client.post(
        action_url(rollout, "resume"), {"reason": ""}, follow=True
    )
    # Then
    assert "Resume refused: rollout" in response.content.decode()
    rollout.refresh_from_db()
    assert rollout.status == Status.DRAFT


def test_rollout_action__staff_without_permission__403(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    User.objects.create_user("viewer", password="x", is_staff=True)
    client = Client()
    client.login(username="viewer", password="x")
    # When
    response = client.post(action_url(rollout, "pause"), {"reason": "x"})
    # Then
    assert response.status_code == 403
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING


def test_rollout_add__template_form__draft_created_by_admin(
    admin_client, flag, merchants
):
    # Given
    data = {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "demo-fast",
        "pilot_merchants": "m-1001",
        "checks": '[{"name": "errors", "provider": "outcomes", '
        '"spec": {"metric": "error_rate"}, "threshold": 0.05}]',
    }
    # When
    response = admin_client.post("/admin/canary/rollout/add/", data)
    # Then
    assert response.status_code == 302
    rollout = Rollout.objects.get()
    assert rollout.status == Status.DRAFT and rollout.checks.get().name == "errors"
    assert AuditEvent.objects.get(action="rollout.created").actor_name == "boss"


def test_rollout_add__bad_checks_json__form_error(admin_client, flag, merchants):
    # Given
    data = {
        "flag": "sequential_workflow",
        "environment": "production",
        "template": "demo-fast",
        "pilot_merchants": "m-1001",
        "checks": "[{",
    }
    # When
    response = admin_client.post("/admin/canary/rollout/add/", data)
    # Then
    assert response.status_code == 200
    assert "malformed JSON" in response.content.decode()
    assert not Rollout.objects.exists()


def test_check_run_changelist__runs__listed(admin_client, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "fail", 0.3, message="0.3 is not < 0.05")
    # When
    page = admin_client.get("/admin/canary/checkrun/").content.decode()
    # Then
    assert "0.3 is not &lt; 0.05" in page


def test_rollout_changelist__more_rollouts__same_number_of_queries(
    admin_client, rollout_factory
):
    # Given
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    first = rollout_factory(started=True)
    services.rollout_pause(rollout_id=first.pk, actor=SYSTEM, reason="first reason")
    with CaptureQueriesContext(connection) as one:
        page = admin_client.get("/admin/canary/rollout/").content.decode()
    services.rollout_abort(rollout_id=first.pk, actor=SYSTEM, reason="x")
    for _ in range(4):
        rollout = rollout_factory()
        services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="later")
    # When
    with CaptureQueriesContext(connection) as five:
        more = admin_client.get("/admin/canary/rollout/").content.decode()
    # Then
    assert "first reason" in page and "phase 1 of 4 (pilot)" in page
    assert more.count("later") >= 4
    assert len(five) == len(one)


def test_rollout_report_page__rolled_back__verdict_shown(admin_client, rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "fail", 0.2, message="0.2 not < 0.05")
    services.rollout_fail_phase(
        rollout_id=rollout.pk, actor=SYSTEM, reason="check failed"
    )
    # When
    change = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/change/"
    ).content.decode()
    page = admin_client.get(
        f"/admin/canary/rollout/{rollout.pk}/report/"
    ).content.decode()
    # Then
    assert f"/admin/canary/rollout/{rollout.pk}/report/" in change
    assert "ROLL BACK</span></h2>" in page and "## Verdict" not in page
    assert "0.2 not &lt; 0.05" in page
