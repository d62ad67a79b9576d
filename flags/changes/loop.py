"""The dev loop: the scheduled-change tick in a thread, without a broker.

With Celery, beat runs ``scheduled_changes_tick_task`` every second. The
zero-setup dev server has no beat; ``start_loop_thread`` ticks in a daemon
thread instead (``manage.py demo --serve`` can start it beside the canary
controller's loop).
"""

from __future__ import annotations

import logging
import threading

from django.db import close_old_connections, connections

logger = logging.getLogger(__name__)


def run_loop(stop_event: threading.Event, interval: float = 1.0) -> None:
    """Apply due scheduled changes every ``interval`` seconds until stopped.

    Never raises: a failed tick is logged and the next one runs.
    """
    from flags.changes.tasks import scheduled_changes_tick_task

    try:
        while not stop_event.is_set():
            try:
                scheduled_changes_tick_task()
            except Exception:
                logger.exception("scheduled-change tick failed")
            finally:
                close_old_connections()
            stop_event.wait(interval)
    finally:
        # This thread's connections would otherwise outlive it.
        connections.close_all()


def start_loop_thread(
    interval: float = 1.0,
) -> tuple[threading.Thread, threading.Event]:
    """Start ``run_loop`` in a daemon thread; return it and its stop event."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_loop, args=(stop, interval), name="scheduled-changes", daemon=True
    )
    thread.start()
    return thread, stop
