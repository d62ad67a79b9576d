"""The dev loop applies a due change within about a second of its time."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from django.utils import timezone

from flags.changes import services
from flags.changes.loop import start_loop_thread
from flags.changes.models import ScheduledChange, ScheduledChangeStatus


@pytest.mark.django_db(transaction=True)
def test_loop__change_due_in_a_second__applied_within_two(flag, production, alice):
    # Given
    change = services.scheduled_change_create(
        actor=alice,
        operation="flag_state.kill",
        arguments={"flag": "checkout_theme", "environment": "production"},
        run_at=timezone.now() + dt.timedelta(seconds=1),
    )
    thread, stop = start_loop_thread(interval=0.2)
    try:
        # When
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            change.refresh_from_db()
            if change.status != ScheduledChangeStatus.SCHEDULED:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(timeout=10)
    # Then
    change = ScheduledChange.objects.get(pk=change.pk)
    assert change.status == ScheduledChangeStatus.APPLIED, change.result
    assert change.applied_at - change.run_at < dt.timedelta(seconds=2)
