"""Controllers in several threads against committed data: concurrent ticks
apply nothing twice (row locks with skip_locked on PostgreSQL), and the
in-process loop of the zero-setup demo advances a rollout by itself."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import OperationalError, connection

from canary.controller import controller_tick, loop_is_running, start_loop_thread
from canary.models import CheckRun, Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import http_check

Status = RolloutStatus


def _status(pk: int) -> str | None:
    """Return the rollout's status; None while SQLite's shared cache is
    locked by the loop thread's write."""
    try:
        return Rollout.objects.values_list("status", flat=True).get(pk=pk)
    except OperationalError:
        return None


def _in_threads(count: int, target) -> list[BaseException]:
    """Run ``target`` in ``count`` threads released together; return errors."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            barrier.wait(timeout=10)
            target()
        except BaseException as exc:  # reported to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return errors


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_controller_tick__four_controllers_at_once__one_measurement_one_advance(
    rollout_factory, health_server
):
    # Given: phase 0 opens after 1 s, when its check is due again; the
    # start's commit already ticked once (one passing measurement)
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 1},
        {"name": "10%", "percentage": 10, "min_duration": 60},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    assert CheckRun.objects.filter(rollout=rollout).count() == 1
    time.sleep(1.1)
    # When: four controllers tick at the same moment, three times each
    errors = _in_threads(4, lambda: [controller_tick() for _ in range(3)])
    # Then
    assert errors == []
    current = Rollout.objects.get(pk=rollout.pk)
    assert (current.status, current.current_phase) == (Status.RUNNING, 1)
    advanced = AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    )
    assert advanced.count() == 1
    assert CheckRun.objects.filter(rollout=rollout, phase_index=0).count() == 2
    # Phase 1's check is due at once; whether a tick was left to measure it
    # depends on timing, but never twice.
    assert CheckRun.objects.filter(rollout=rollout, phase_index=1).count() <= 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_controller_tick__concurrent_failure__one_rollback_run(
    rollout_factory, health_server
):
    # Given: a running rollout whose check starts failing
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 60},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    health_server.status = 500
    time.sleep(1.05)  # the check is due again
    # When
    errors = _in_threads(4, lambda: [controller_tick() for _ in range(2)])
    # Then
    from rollback.models import RollbackRun

    assert errors == []
    assert Rollout.objects.get(pk=rollout.pk).status == Status.ROLLED_BACK
    assert RollbackRun.objects.filter(trigger_ref=str(rollout.pk)).count() == 1
    assert (
        AuditEvent.objects.filter(
            action="rollout.phase_failed", target_id=str(rollout.pk)
        ).count()
        == 1
    )
    assert AuditEvent.objects.filter(action="check.failed").count() == 1


@pytest.mark.django_db(transaction=True)
def test_run_loop__background_thread__rollout_advances_and_completes(
    rollout_factory, health_server
):
    # Given: a rollout whose first phase lasts 1 s
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 1},
        {"name": "50%", "percentage": 50},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    # When: the demo's loop ticks every 0.2 s until the rollout completes
    thread, stop = start_loop_thread(interval=0.2)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _status(rollout.pk) == Status.COMPLETED:
                break
            time.sleep(0.1)
        running = loop_is_running()
    finally:
        stop.set()
        thread.join(timeout=10)
    # Then
    assert Rollout.objects.get(pk=rollout.pk).status == Status.COMPLETED
    assert running and not thread.is_alive() and not loop_is_running()
    assert (
        AuditEvent.objects.filter(
            action="rollout.phase_advanced", target_id=str(rollout.pk)
        ).count()
        == 2
    )


@pytest.mark.django_db(transaction=True)
def test_run_loop__check_due_before_next_tick__measured_on_time(
    rollout_factory, health_server
):
    # Given: a check measured every second, a loop ticking only every 5 s
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 60},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    assert CheckRun.objects.filter(rollout=rollout).count() == 1  # the start's tick
    # When
    thread, stop = start_loop_thread(interval=5.0)
    try:
        time.sleep(2.6)
    finally:
        stop.set()
        thread.join(timeout=10)
    # Then: measured at about 1 s and 2 s, not at the next 5 s tick
    assert CheckRun.objects.filter(rollout=rollout).count() >= 3


@pytest.mark.django_db(transaction=True)
def test_start_background_services__no_broker__controller_loop_runs():
    # Given: tasks run in process (no broker), as on the zero-setup path
    from canary.management.commands.demo import (
        start_background_services,
        stop_background_services,
    )

    # When
    start_background_services()
    try:
        running = loop_is_running() or (time.sleep(0.2) or loop_is_running())
        names = [t.name for t in threading.enumerate()]
    finally:
        stop_background_services()
    # Then: the controller and the scheduled changes' loops ran, and stop
    assert running and "canary-controller" in names
    assert "scheduled-changes" in names
    assert not loop_is_running()
    assert "scheduled-changes" not in [t.name for t in threading.enumerate()]


def test_start_background_services__broker_configured__no_loop():
    # Given: a broker: celery worker and beat run the controller
    from canary.management.commands.demo import start_background_services
    from controlplane.celery import app

    saved = app.conf.task_always_eager
    app.conf.task_always_eager = False
    try:
        # When
        start_background_services()
        started = loop_is_running()
    finally:
        app.conf.task_always_eager = saved
    # Then
    assert not started
