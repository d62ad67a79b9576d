"""The dev loop: ``controller_tick`` in a thread, without a broker.

``manage.py demo --serve`` runs ``run_loop`` in a daemon thread instead of
Celery beat and a worker; ``canary.tasks.rollout_tick_soon`` wakes it
(``loop_wake``) when one runs here (``loop_is_running``). The loop's state
(the wake event, the requested tick times, the running count, the started
threads) lives in this module only.
"""

from __future__ import annotations

import logging
import threading
import time

from django.db import close_old_connections, connections

from canary.controller.decide import tick_interval
from canary.controller.tick import controller_tick

logger = logging.getLogger(__name__)

_loop_wake = threading.Event()
_loop_lock = threading.Lock()
_loop_count = 0
_loop_due: list[float] = []  # monotonic times of requested ticks


def loop_is_running() -> bool:
    """Return whether a ``run_loop`` ticks in this process."""
    return _loop_count > 0


def loop_wake(countdown: float | None = None) -> None:
    """Ask the in-process loop to tick now (or in ``countdown`` seconds)."""
    if countdown:
        with _loop_lock:
            _loop_due.append(time.monotonic() + countdown)
    else:
        _loop_wake.set()


def run_loop(stop_event: threading.Event, interval: float | None = None) -> None:
    """Tick every ``interval`` seconds (CANARY_TICK_SECONDS) until stopped.

    The zero-setup path without a broker: ``manage.py demo --serve`` runs
    this in a daemon thread instead of Celery beat and a worker. A gate
    that opens (``loop_wake``) ticks at once. Never raises.
    """
    global _loop_count
    with _loop_lock:
        _loop_count += 1
    try:
        while not stop_event.is_set():
            _loop_wake.clear()
            try:
                report = controller_tick()
                for decision in report.decisions:
                    logger.info("controller: %s", decision)
            except Exception:
                logger.exception("controller tick failed")
            finally:
                close_old_connections()
            period = interval if interval is not None else tick_interval()
            next_at = time.monotonic() + period
            while not stop_event.is_set() and not _loop_wake.is_set():
                now = time.monotonic()
                with _loop_lock:
                    due = [t for t in _loop_due if t <= now]
                    if due:
                        _loop_due[:] = [t for t in _loop_due if t > now]
                        break
                    soonest = min([next_at, *_loop_due])
                if now >= next_at:
                    break
                _loop_wake.wait(min(0.25, max(0.0, soonest - now)))
    finally:
        with _loop_lock:
            _loop_count -= 1
        # This thread's connections would otherwise outlive it.
        connections.close_all()


_loops: list[tuple[threading.Thread, threading.Event]] = []


def start_loop_thread(
    interval: float | None = None,
) -> tuple[threading.Thread, threading.Event]:
    """Start ``run_loop`` in a daemon thread; return it and its stop event."""
    stop = threading.Event()
    thread = threading.Thread(
        target=run_loop, args=(stop, interval), name="canary-controller", daemon=True
    )
    thread.start()
    with _loop_lock:
        _loops.append((thread, stop))
    return thread, stop


def stop_loop_threads(timeout: float = 10.0) -> None:
    """Stop every loop this process started and wait for them to end."""
    with _loop_lock:
        loops, _loops[:] = list(_loops), []
    for _, stop in loops:
        stop.set()
    _loop_wake.set()
    for thread, _ in loops:
        thread.join(timeout=timeout)
