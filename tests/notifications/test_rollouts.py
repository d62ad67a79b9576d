"""Rollout events become notices with the phase a person reads (1-based)."""

from __future__ import annotations

from canary import services as canary_services
from canary.models import RolloutStatus
from controlplane.audit.actors import SYSTEM
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.notifications.messages import notice_for
from controlplane.notifications.models import Delivery, DeliveryStatus


def test_rollout__start_advance_pause_rollback__one_notice_each_in_order(
    receiver, webhook_factory, rollout_factory, django_capture_on_commit_callbacks
):
    # Given
    webhook_factory(receiver.url)
    rollout = rollout_factory(name="sequential")
    head = f"[production] rollout {rollout.pk} 'sequential'"
    # When
    with django_capture_on_commit_callbacks(execute=True):
        canary_services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    with django_capture_on_commit_callbacks(execute=True):
        canary_services.rollout_advance(
            rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="passed"
        )
    with django_capture_on_commit_callbacks(execute=True):
        canary_services.rollout_pause(
            rollout_id=rollout.pk, actor=SYSTEM, reason="error budget"
        )
    with django_capture_on_commit_callbacks(execute=True):
        canary_services.rollout_rollback(
            rollout_id=rollout.pk, level=1, actor=SYSTEM, reason="p95 worse"
        )
    # Then
    bodies = [request.json() for request in receiver.received]
    kinds = [body["kind"] for body in bodies]
    assert kinds[:4] == [
        "rollout_started",
        "rollout_advanced",
        "rollout_paused",
        "rollout_rolled_back",
    ]
    messages = [body["message"] for body in bodies]
    assert messages[0] == f"{head} started: phase 1/4 (pilot m-pilot)"
    assert messages[1] == f"{head} advanced to phase 2/4 (10%): passed"
    assert messages[2] == f"{head} paused at phase 2/4 (10%): error budget"
    assert messages[3] == f"{head} rolling back at phase 2/4 (10%): p95 worse"
    paused = bodies[2]
    assert paused["rollout_id"] == rollout.pk
    assert paused["flag"] == "sequential_workflow"
    assert (paused["phase"], paused["phases"]) == (2, 4)
    assert paused["reason"] == "error budget"
    assert paused["link"] == (
        f"https://cp.example.com/admin/canary/rollout/{rollout.pk}/change/"
    )
    assert set(Delivery.objects.values_list("status", flat=True)) == {
        DeliveryStatus.DELIVERED
    }


def test_rollout__completed_and_awaiting_approval__notices(rollout_factory, production):
    # Given
    rollout = rollout_factory(RolloutStatus.RUNNING, name="r")
    # When
    with audited_transaction():
        awaiting = canary_services.rollout_transition(
            rollout_id=rollout.pk,
            to=RolloutStatus.AWAITING_APPROVAL,
            actor=SYSTEM,
            reason="phase 1 needs approval",
        )
    from controlplane.audit.models import AuditEvent

    event = AuditEvent.objects.filter(action="rollout.transition").latest("id")
    # Then
    notice = notice_for(event)
    assert awaiting.status == RolloutStatus.AWAITING_APPROVAL
    assert notice.kind == "rollout_awaiting_approval"
    assert notice.message.startswith(
        f"[production] rollout {rollout.pk} 'r' waits for approval at phase 1/4"
    )


def test_escalation_event__notice__names_the_level(rollout_factory):
    # Given: the event rollout_escalate writes (it needs a deployment to run)
    rollout = rollout_factory(RolloutStatus.ROLLED_BACK, name="r")
    with audited_transaction():
        event = record_audit_event(
            actor=SYSTEM,
            action="rollout.rollback_escalated",
            target=rollout,
            environment="production",
            details={"from_level": 1, "level": 2, "reason": "still worse"},
        )
    # When
    notice = notice_for(event)
    # Then
    assert notice.kind == "rollout_escalated"
    assert notice.message.startswith(
        f"[production] rollout {rollout.pk} 'r' rollback escalated to level 2: "
        "still worse"
    )


def test_resume_and_other_actions__no_notice(rollout_factory):
    # Given
    rollout = rollout_factory(RolloutStatus.PAUSED)
    # When
    canary_services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM)
    from controlplane.audit.models import AuditEvent

    resumed = AuditEvent.objects.filter(action="rollout.transition").latest("id")
    created = AuditEvent.objects.get(action="rollout.created")
    # Then
    assert resumed.details["to"] == "running"
    assert notice_for(resumed) is None
    assert notice_for(created) is None


def test_rollback_failed_event__notice__says_failed_with_the_reason(rollout_factory):
    # Given: the event rollout_rollback_finished writes for a failed run
    rollout = rollout_factory(RolloutStatus.ROLLING_BACK, name="r")
    with audited_transaction():
        event = record_audit_event(
            actor=SYSTEM,
            action="rollout.rollback_failed",
            target=rollout,
            environment="production",
            details={"reason": "rollback run 3 (level 2) failed: exit 1"},
        )
    # When
    notice = notice_for(event)
    # Then
    assert notice.kind == "rollout_rollback_failed"
    assert notice.message.startswith(
        f"[production] rollout {rollout.pk} 'r' rollback FAILED: "
        "rollback run 3 (level 2) failed: exit 1"
    )
