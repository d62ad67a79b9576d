"""End to end: a real Celery worker and beat on Redis run the controller.

The worker and beat are subprocesses with the production settings module
(``controlplane.settings``) pointed at this test run's PostgreSQL database
and Redis db 7, ticking every 0.5 s. This process publishes to the same
broker (not eager), so the start's immediate tick and every rollback run
also go through the worker. An "app" thread evaluates the flag for a set
of merchants from the live ruleset and reports outcome events for the
variation each one was served, the way the simulator does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection

from canary.models import Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import (
    SAMPLE,
    answers,
    http_check,
    outcomes_check,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
]

Status = RolloutStatus
BROKER = "redis://127.0.0.1:6379/7"
TICK_SECONDS = "0.5"
ROOT = Path(__file__).resolve().parents[2]
# The celery of the interpreter running the tests: a worktree has no .venv.
CELERY = str(Path(sys.executable).with_name("celery"))
APP_MERCHANTS = ["m-pilot", "m-pilot-2", *SAMPLE[:200]]


def _database_url() -> str:
    db = settings.DATABASES["default"]
    auth = db.get("USER") or "postgres"
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    host, port = db.get("HOST") or "127.0.0.1", db.get("PORT") or 5432
    return f"postgres://{auth}@{host}:{port}/{db['NAME']}"


def _start(args: list[str], log: Path, env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [CELERY, "-A", "controlplane", *args],
        cwd=ROOT,
        env=env,
        stdout=open(log, "wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=3)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=5)


def _wait_for_line(
    log: Path, text: str, process: subprocess.Popen, timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in log.read_text(errors="replace"):
            return
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(
        f"{log.name}: no {text!r} within {timeout:g}s:\n"
        + log.read_text(errors="replace")[-3000:]
    )


def _flush_broker() -> None:
    import redis

    client = redis.Redis.from_url(BROKER, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="module")
def celery_worker_and_beat(django_db_setup, django_db_blocker) -> Iterator[Path]:
    """Start ``celery worker`` and ``celery beat`` once for this module."""
    try:
        _flush_broker()
    except Exception as exc:  # no Redis on this machine
        pytest.skip(f"Redis at {BROKER} is unavailable: {exc}")
    workdir = Path(tempfile.mkdtemp(prefix="cp-e2e-"))
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": _database_url(),
        "CELERY_BROKER_URL": BROKER,
        "CONTROLPLANE_CANARY_TICK_SECONDS": TICK_SECONDS,
        "CONTROLPLANE_VAR_DIR": str(workdir),
        "DATABASE_CONN_MAX_AGE": "0",
        "LOG_LEVEL": "INFO",
    }
    worker = _start(
        [
            "worker",
            "-l",
            "INFO",
            "--concurrency",
            "2",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            "-n",
            "cp-e2e@%h",
        ],
        workdir / "worker.log",
        env,
    )
    beat = _start(
        [
            "beat",
            "-l",
            "INFO",
            "-s",
            str(workdir / "beat-schedule"),
            "--pidfile",
            str(workdir / "beat.pid"),
        ],
        workdir / "beat.log",
        env,
    )
    try:
        _wait_for_line(workdir / "worker.log", "ready.", worker, timeout=30)
        _wait_for_line(workdir / "beat.log", "beat: Starting", beat, timeout=30)
        yield workdir
    finally:
        _stop(beat)
        _stop(worker)
        try:
            _flush_broker()
        except Exception:
            pass


@pytest.fixture
def via_broker(celery_worker_and_beat) -> Iterator[None]:
    """Publish this process's tasks to the worker instead of running them."""
    from controlplane.celery import app

    saved = (app.conf.task_always_eager, app.conf.broker_url)
    app.conf.task_always_eager = False
    app.conf.broker_url = BROKER
    try:
        yield
    finally:
        app.conf.task_always_eager, app.conf.broker_url = saved


class App(threading.Thread):
    """Evaluate the flag for merchants and report their outcomes, 5x a second.

    ``failing(share)`` says whether the treatment fails now, given the share
    of merchants it is served to (an injected regression).
    """

    def __init__(
        self,
        environment,
        flag_key: str,
        failing: Callable[[float], bool] = lambda share: False,
    ) -> None:
        super().__init__(daemon=True)
        self.environment, self.flag_key, self.failing = environment, flag_key, failing
        self.stop = threading.Event()
        self.errors: list[str] = []

    def run(self) -> None:
        from canary.services.outcomes import outcome_events_ingest

        try:
            while not self.stop.is_set():
                served = answers(self.environment, self.flag_key, APP_MERCHANTS)
                share = sum(1 for v in served.values() if v is True) / len(served)
                failing = self.failing(share)
                events = [
                    {
                        "flag": self.flag_key,
                        "merchant": key,
                        "variation": "on" if value else "off",
                        "outcome": "failure"
                        if value and failing and i % 4 == 0
                        else "success",
                        "duration_ms": 30.0 + i % 10,
                    }
                    for i, (key, value) in enumerate(served.items())
                ]
                outcome_events_ingest(events=events, environment=self.environment)
                self.stop.wait(0.2)
        except Exception as exc:
            self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            connection.close()


def _wait_status(rollout: Rollout, statuses: set[str], timeout: float) -> Rollout:
    deadline = time.monotonic() + timeout
    current = Rollout.objects.get(pk=rollout.pk)
    while time.monotonic() < deadline and current.status not in statuses:
        time.sleep(0.1)
        current = Rollout.objects.get(pk=rollout.pk)
    return current


def _logs(workdir: Path) -> str:
    return (workdir / "worker.log").read_text(errors="replace")[-4000:]


PHASES = [
    {"name": "pilot", "pilot_merchants": ["m-pilot"], "min_duration": 1},
    {"name": "10%", "percentage": 10, "min_duration": 1},
    {"name": "50%", "percentage": 50, "min_duration": 1},
    {"name": "100%", "percentage": 100, "min_duration": 1},
]


def test_worker_and_beat__healthy_rollout__pilot_10_50_100_completes(
    celery_worker_and_beat, via_broker, rollout_factory, production, health_server
):
    # Given: the app reports healthy outcomes; checks pass
    app = App(production, "sequential_workflow")
    app.start()
    try:
        # When: started here, driven by the worker and beat from now on
        rollout = rollout_factory(
            phases=PHASES, checks=[http_check(health_server.url), outcomes_check()]
        )
        done = _wait_status(
            rollout, {Status.COMPLETED, Status.PAUSED, Status.ROLLED_BACK}, timeout=30
        )
    finally:
        app.stop.set()
        app.join(timeout=5)
    # Then
    assert app.errors == []
    assert done.status == Status.COMPLETED, (
        done.pause_reason,
        _logs(celery_worker_and_beat),
    )
    advanced = AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    ).order_by("id")
    assert [e.after["phase"] for e in advanced] == [1, 2, 3]
    assert {e.actor_type for e in advanced} == {"controller"}
    assert all(
        v is True for v in answers(production, "sequential_workflow", SAMPLE).values()
    )
    assert "canary.tasks.controller_tick_task" in _logs(celery_worker_and_beat)


def test_worker_and_beat__regression_at_50_percent__rolled_back_to_captured_state(
    celery_worker_and_beat, via_broker, rollout_factory, production, flag, merchants
):
    # Given: the flag is on for one merchant by override; the treatment
    # starts failing a quarter of its requests once it reaches half of them
    from controlplane.audit.actors import SYSTEM
    from flags import services as flag_services

    flag_services.flag_state_update(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        expected_version=None,
        enabled=True,
        fallthrough={"variation": "off"},
    )
    flag_services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchants["m-pilot-2"],
        variation="on",
        note="beta",
    )
    keys = ["m-pilot", "m-pilot-2", *SAMPLE]
    before = answers(production, flag.key, keys)
    app = App(production, flag.key, failing=lambda share: share >= 0.4)
    app.start()
    try:
        # When
        rollout = rollout_factory(
            phases=PHASES, checks=[outcomes_check(failure_limit=1, min_samples=3)]
        )
        done = _wait_status(
            rollout, {Status.ROLLED_BACK, Status.COMPLETED, Status.PAUSED}, timeout=30
        )
    finally:
        app.stop.set()
        app.join(timeout=5)
    # Then
    assert app.errors == []
    assert done.status == Status.ROLLED_BACK, (
        done.pause_reason,
        _logs(celery_worker_and_beat),
    )
    assert done.current_phase == 2
    assert answers(production, flag.key, keys) == before
    failed = AuditEvent.objects.get(
        action="rollout.phase_failed", target_id=str(rollout.pk)
    )
    assert failed.actor_type == "controller"
    assert failed.details["checks"][0]["check"] == "error_rate"
    assert "failure_limit 1" in failed.details["checks"][0]["limit"]
    from rollback.models import RollbackRun

    run = RollbackRun.objects.get(trigger_ref=str(rollout.pk))
    assert (run.level, run.status) == (1, "succeeded")


def test_worker_and_beat__erroring_check__paused_not_advanced(
    celery_worker_and_beat, via_broker, rollout_factory, closed_url
):
    # Given: a check against a port nobody listens on
    # When
    rollout = rollout_factory(
        phases=PHASES, checks=[http_check(closed_url, consecutive_error_limit=1)]
    )
    done = _wait_status(
        rollout, {Status.PAUSED, Status.COMPLETED, Status.ROLLED_BACK}, timeout=20
    )
    # Then
    assert done.status == Status.PAUSED, _logs(celery_worker_and_beat)
    assert done.current_phase == 0
    assert (
        "errored" in done.pause_reason
        and "consecutive_error_limit 1" in done.pause_reason
    )
    assert not AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    ).exists()


def test_worker_and_beat__paused_longer_than_min_duration__resumed_phase_soaks_again(
    celery_worker_and_beat, via_broker, rollout_factory, health_server
):
    # Given: a 3 s pilot phase paused at once, and left paused for 4 s
    from canary import services
    from controlplane.audit.actors import SYSTEM

    phases = [{**PHASES[0], "min_duration": 3}, *PHASES[1:]]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    services.rollout_pause(rollout_id=rollout.pk, actor=SYSTEM, reason="hold on")
    time.sleep(4)
    # When: resumed; the beat ticks every 0.5 s and the check passes
    services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM)
    resumed = time.monotonic()
    time.sleep(2)
    held = Rollout.objects.get(pk=rollout.pk)
    deadline = time.monotonic() + 10
    while (
        Rollout.objects.get(pk=rollout.pk).current_phase == 0
        and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    advanced_after = time.monotonic() - resumed
    # Then: it waited for about 3 s of running time after the resume
    assert held.current_phase == 0 and held.status == Status.RUNNING
    assert Rollout.objects.get(pk=rollout.pk).current_phase >= 1, _logs(
        celery_worker_and_beat
    )
    assert advanced_after >= 2.4
    advanced = AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    ).order_by("id")[0]
    assert advanced.actor_type == "controller"
