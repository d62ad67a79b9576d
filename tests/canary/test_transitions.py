"""The rollout status machine: every allowed move, a sample of refused ones,
redeliveries that change nothing."""

from __future__ import annotations

import pytest

from canary import services
from canary.exceptions import RolloutInvalidTransition
from canary.models import Rollout, RolloutStatus
from canary.transitions import ALLOWED, TERMINAL
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent

Status = RolloutStatus

ALLOWED_PAIRS = sorted(
    (current, to) for current, targets in ALLOWED.items() for to in targets
)
REFUSED_PAIRS = [
    (Status.DRAFT, Status.PAUSED),
    (Status.DRAFT, Status.COMPLETED),
    (Status.DRAFT, Status.ROLLING_BACK),
    (Status.RUNNING, Status.ROLLED_BACK),
    (Status.RUNNING, Status.DRAFT),
    (Status.PAUSED, Status.COMPLETED),
    (Status.PAUSED, Status.AWAITING_APPROVAL),
    (Status.AWAITING_APPROVAL, Status.COMPLETED),
    (Status.ROLLING_BACK, Status.RUNNING),
    (Status.ROLLING_BACK, Status.ABORTED),
    (Status.COMPLETED, Status.RUNNING),
    (Status.COMPLETED, Status.ROLLING_BACK),
    (Status.ROLLED_BACK, Status.RUNNING),
    (Status.ABORTED, Status.RUNNING),
    (Status.ABORTED, Status.DRAFT),
]


def _transition_events(rollout: Rollout):
    return AuditEvent.objects.filter(
        action="rollout.transition",
        target_type="canary.rollout",
        target_id=str(rollout.pk),
    )


def test_allowed_table__matches_style_guide__exactly():
    # Given
    expected = {
        "draft": {"running", "aborted"},
        "running": {
            "paused",
            "awaiting_approval",
            "completed",
            "rolling_back",
            "aborted",
        },
        "awaiting_approval": {"running", "paused", "rolling_back", "aborted"},
        "paused": {"running", "rolling_back", "aborted"},
        "rolling_back": {"rolled_back"},
        "completed": set(),
        "rolled_back": set(),
        "aborted": set(),
    }
    # When
    actual = {
        str(status): {str(t) for t in targets} for status, targets in ALLOWED.items()
    }
    # Then
    assert actual == expected
    assert set(TERMINAL) == {"completed", "rolled_back", "aborted"}


@pytest.mark.parametrize(("current", "to"), ALLOWED_PAIRS)
def test_rollout_transition__allowed__status_saved_and_audited(
    rollout_factory, current, to
):
    # Given
    rollout = rollout_factory(current)
    events_before = _transition_events(rollout).count()
    # When
    if current == Status.DRAFT and to == Status.RUNNING:
        result = services.rollout_start(
            rollout_id=rollout.pk, actor=SYSTEM, reason="go"
        )
    else:
        result = services.rollout_transition(
            rollout_id=rollout.pk, to=to, actor=SYSTEM, reason="go"
        )
    # Then
    rollout.refresh_from_db()
    assert result.status == rollout.status == to
    event = _transition_events(rollout).order_by("-id").first()
    assert _transition_events(rollout).count() == events_before + 1
    assert (event.before, event.after) == ({"status": current}, {"status": to})
    assert event.details["from"] == current and event.details["to"] == to
    assert event.details["reason"] == "go"
    assert (rollout.finished_at is not None) == (to in TERMINAL)


@pytest.mark.parametrize(("current", "to"), REFUSED_PAIRS)
def test_rollout_transition__refused__409_and_nothing_written(
    rollout_factory, current, to
):
    # Given
    rollout = rollout_factory(current)
    events_before = AuditEvent.objects.count()
    version = rollout.version
    # When
    with pytest.raises(RolloutInvalidTransition) as caught:
        services.rollout_transition(
            rollout_id=rollout.pk, to=to, actor=SYSTEM, reason="x"
        )
    # Then
    rollout.refresh_from_db()
    assert caught.value.http_status == 409
    assert caught.value.code == "invalid_transition"
    assert f"from {current} to {to}" in caught.value.message
    assert (rollout.status, rollout.version) == (current, version)
    assert AuditEvent.objects.count() == events_before


def test_rollout_transition__redelivered__single_audit_event(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    # When
    for _ in range(2):
        services.rollout_transition(
            rollout_id=rollout.pk, to=Status.PAUSED, actor=SYSTEM, reason="ops"
        )
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.PAUSED
    assert rollout.pause_reason == "ops"
    assert _transition_events(rollout).filter(after={"status": "paused"}).count() == 1


def test_rollout_transition__draft_to_running_directly__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.DRAFT)
    # When
    with pytest.raises(Exception) as caught:
        services.rollout_transition(
            rollout_id=rollout.pk,
            to=Status.RUNNING,
            actor=SYSTEM,
            reason="skip the capture",
        )
    # Then
    rollout.refresh_from_db()
    assert caught.value.http_status == 409
    assert rollout.status == Status.DRAFT


def test_rollout_transition__unknown_status__field_error(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    # When
    with pytest.raises(Exception) as caught:
        services.rollout_transition(
            rollout_id=rollout.pk, to="flying", actor=SYSTEM, reason=""
        )
    # Then
    assert (caught.value.http_status, caught.value.field) == (400, "to")


def test_rollout_transition__unknown_rollout__not_found(db):
    # When
    with pytest.raises(Exception) as caught:
        services.rollout_transition(
            rollout_id=999_999, to=Status.PAUSED, actor=SYSTEM, reason=""
        )
    # Then
    assert caught.value.http_status == 404


def test_rollout_start__redelivered__one_transition_and_phase_applied_once(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(Status.DRAFT)
    # When
    for _ in range(2):
        services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    assert _transition_events(rollout).count() == 1
    assert AuditEvent.objects.filter(action="override.created").count() == 1


def test_rollout_start__aborted_rollout__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.ABORTED)
    # When
    with pytest.raises(RolloutInvalidTransition):
        services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.ABORTED


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_rollout_advance__four_workers_at_once__phase_advanced_once(rollout_factory):
    # Given
    import threading

    from django.db import connection

    from controlplane.audit.actors import CONTROLLER

    rollout = rollout_factory(Status.RUNNING)
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            barrier.wait(timeout=10)
            services.rollout_advance(
                rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason="tick"
            )
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    # When
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then
    rollout.refresh_from_db()
    assert errors == []
    assert rollout.current_phase == 1
    assert AuditEvent.objects.filter(action="rollout.phase_advanced").count() == 1
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1
