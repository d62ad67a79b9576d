"""Celery tasks of pending changes: the scheduled-change tick."""

from __future__ import annotations

from celery import shared_task


@shared_task(acks_late=True)
def scheduled_changes_tick_task() -> int:
    """Apply the scheduled changes now due, and what a crash left behind.

    Beat runs it every second (``CELERY_BEAT_SCHEDULE``), so a change runs
    within about a second of its time; two workers running it at once
    apply each change once.
    """
    from controlplane.audit.actors import SYSTEM
    from flags.changes import services

    applied = services.scheduled_changes_apply_due(actor=SYSTEM)
    services.change_requests_reap(actor=SYSTEM)
    return applied
