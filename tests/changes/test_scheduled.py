"""Scheduled changes: schedule, cancel, the tick, the stale-version rule."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from controlplane.exceptions import Conflict, InvalidInput, InvalidTransition
from flags import selectors
from flags import services as flag_services
from flags.changes import services
from flags.changes.models import ScheduledChangeStatus as Status
from flags.changes.tasks import scheduled_changes_tick_task

PCT = "flag_state.percentage"


def _args(pct: float) -> dict:
    return {"flag": "checkout_theme", "environment": "production", "percentage": pct}


def _schedule(actor, pct: float, seconds: float = 60, operation: str = PCT, **kw):
    return services.scheduled_change_create(
        actor=actor,
        operation=operation,
        arguments=kw.pop("arguments", None) or _args(pct),
        run_at=timezone.now() + dt.timedelta(seconds=seconds),
        **kw,
    )


def _weight(flag, production) -> int:
    state = selectors.flag_state_get(flag=flag, environment=production)
    return state.fallthrough["split"][0]["weight"]


def test_tick__due__applied_by_the_task_within_a_tick(flag, production, alice):
    # Given
    change = _schedule(
        alice, 30, seconds=5
    )  # not due at the first tick, even on a busy machine
    # When: not due yet, then due
    before = scheduled_changes_tick_task.apply().get()
    due_at = change.run_at
    late = services.scheduled_changes_apply_due(
        actor=alice, now=due_at + dt.timedelta(milliseconds=1)
    )
    # Then
    change.refresh_from_db()
    assert before == 0 and late == 1
    assert change.status == Status.APPLIED
    assert change.applied_at - change.run_at < dt.timedelta(seconds=2)
    assert _weight(flag, production) == 30_000
    assert AuditEvent.objects.filter(
        action="scheduled_change.applied", target_id=str(change.pk)
    ).exists()


def test_tick__twice__applied_once(flag, production, alice):
    # Given
    change = _schedule(alice, 30, seconds=0.01)
    later = change.run_at + dt.timedelta(seconds=1)
    # When
    first = services.scheduled_changes_apply_due(actor=alice, now=later)
    second = services.scheduled_changes_apply_due(actor=alice, now=later)
    # Then
    assert (first, second) == (1, 0)
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1


def test_tick__long_overdue_after_restart__applied(flag, production, alice):
    # Given: a worker was down for an hour past the change's time
    change = _schedule(alice, 40, seconds=1)
    # When
    applied = services.scheduled_changes_apply_due(
        actor=alice, now=change.run_at + dt.timedelta(hours=1)
    )
    # Then
    change.refresh_from_db()
    assert applied == 1 and change.status == Status.APPLIED


def test_tick__fields_changed_since__refused_with_reason(flag, production, alice, bob):
    # Given
    change = _schedule(alice, 30, seconds=1)
    flag_services.flag_state_set_percentage(
        actor=bob, flag=flag, environment=production, percentage=5
    )
    # When
    services.scheduled_changes_apply_due(
        actor=alice, now=change.run_at + dt.timedelta(seconds=1)
    )
    # Then
    change.refresh_from_db()
    assert change.status == Status.REFUSED
    assert "fallthrough changed since version 1 (now version 2)" in change.result
    assert _weight(flag, production) == 5_000
    assert AuditEvent.objects.filter(action="scheduled_change.refused").count() == 1


def test_tick__unrelated_field_changed_since__applied(flag, production, alice, bob):
    # Given: targeting is turned on meanwhile; the percentage is untouched
    change = _schedule(alice, 30, seconds=1)
    flag_services.flag_state_set_enabled(
        actor=bob, flag=flag, environment=production, enabled=True
    )
    # When
    services.scheduled_changes_apply_due(
        actor=alice, now=change.run_at + dt.timedelta(seconds=1)
    )
    # Then
    change.refresh_from_db()
    assert change.status == Status.APPLIED
    assert _weight(flag, production) == 30_000


def test_tick__plan_of_two_scheduled_steps__both_applied(flag, production, alice):
    # Given: 10% then 50%, both scheduled from version 1
    first = _schedule(alice, 10, seconds=1)
    second = _schedule(alice, 50, seconds=2)
    # When
    services.scheduled_changes_apply_due(
        actor=alice, now=first.run_at + dt.timedelta(milliseconds=10)
    )
    services.scheduled_changes_apply_due(
        actor=alice, now=second.run_at + dt.timedelta(milliseconds=10)
    )
    # Then: the earlier scheduled step is not a conflict for the later one
    second.refresh_from_db()
    assert second.status == Status.APPLIED, second.result
    assert _weight(flag, production) == 50_000


def test_tick__kill_then_restore__both_applied(flag, production, alice):
    # Given: a maintenance window
    args = {"flag": "checkout_theme", "environment": "production"}
    flag_services.flag_state_set_enabled(
        actor=alice, flag=flag, environment=production, enabled=True
    )
    kill = _schedule(alice, 0, 1, operation="flag_state.kill", arguments=args)
    restore = _schedule(alice, 0, 2, operation="flag_state.restore", arguments=args)
    # When
    services.scheduled_changes_apply_due(
        actor=alice, now=restore.run_at + dt.timedelta(seconds=1)
    )
    # Then
    kill.refresh_from_db()
    restore.refresh_from_db()
    assert (kill.status, restore.status) == (Status.APPLIED, Status.APPLIED)
    state = selectors.flag_state_get(flag=flag, environment=production)
    assert state.enabled and state.killed_at is None


def test_cancel__then_tick__nothing_applied(flag, production, alice):
    # Given
    change = _schedule(alice, 30, seconds=1)
    # When
    services.scheduled_change_cancel(scheduled_change_id=change.pk, actor=alice)
    services.scheduled_changes_apply_due(
        actor=alice, now=change.run_at + dt.timedelta(seconds=1)
    )
    # Then
    change.refresh_from_db()
    assert change.status == Status.CANCELLED
    assert selectors.flag_state_get(flag=flag, environment=production).version == 1
    with pytest.raises(InvalidTransition):
        services.scheduled_change_cancel(scheduled_change_id=change.pk, actor=alice)


def test_create__past_time__refused(flag, alice):
    with pytest.raises(InvalidInput) as caught:
        _schedule(alice, 30, seconds=-5)
    assert caught.value.field == "run_at"


def test_create__policy_requires_approval__refused(flag, alice, two_eyes):
    with pytest.raises(Conflict, match="create a change request"):
        _schedule(alice, 30)


def test_create__stale_expected_version__refused(flag, alice):
    from controlplane.exceptions import VersionConflict

    with pytest.raises(VersionConflict):
        _schedule(alice, 30, expected_version=7)
