"""Crash safety with real processes: a Celery worker SIGKILLed mid-run."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from rollback.models import RollbackStep, RunStatus, StepStatus
from tests.rollback.conftest import calls

ROOT = Path(__file__).resolve().parents[2]
BROKER = "redis://127.0.0.1:6379/3"


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@pytest.fixture
def process_env(tmp_path, deploy_script):
    """Environment for worker and command processes sharing the test database."""
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    controlplane = {
        "RULESET_BACKGROUND": False,
        "ROLLBACK_STEP_LEASE_GRACE_SECONDS": 0,
        "ROLLBACK_DEPLOY_BACKENDS": {
            "default": {
                "type": "command",
                "argv": [str(deploy_script), "{service}", "{version}"],
                "verify_argv": [str(deploy_script), "status"],
                "timeout": 4,
                "env": {"DEPLOY_SLEEP": "2"},
            }
        },
    }
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.rollback.worker_settings",
        "ROLLBACK_TEST_DATABASE_URL": f"postgres://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}",
        "ROLLBACK_TEST_BROKER_URL": BROKER,
        "ROLLBACK_TEST_QUEUE": f"rollback-test-{uuid.uuid4().hex[:8]}",
        "ROLLBACK_TEST_CONTROLPLANE": json.dumps(controlplane),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def workers(process_env, tmp_path):
    """Start real `celery worker` processes; kill what is left at the end."""
    started: list[subprocess.Popen] = []

    def start(name: str) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "--pool=solo",
                "-Q",
                process_env["ROLLBACK_TEST_QUEUE"],
                "-n",
                f"{name}@%h",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-l",
                "info",
            ],
            cwd=ROOT,
            env=process_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def _manage(process_env, *args) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", args[0], "--skip-checks", *args[1:]],
        cwd=ROOT,
        env=process_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.postgres
@pytest.mark.slow
def test_worker_killed_mid_step__new_worker_finishes__each_side_effect_once(
    transactional_db, production, flag_factory, process_env, workers, tmp_path
):
    # Given: a live flag and v1 -> v2 of "shop"; worker A picks up a level-2 run
    from flags import services as flag_services
    from rollback.services import deployment_record

    flag = flag_factory("sequential_workflow")
    flag_services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v1",
        migration_state={},
    )
    v2 = deployment_record(
        actor=SYSTEM,
        service="shop",
        environment=production,
        version="v2",
        migration_state={},
    )
    worker_a = workers("a")
    out = _manage(
        process_env,
        "rollback",
        "run",
        "--deployment",
        str(v2.pk),
        "--level",
        "2",
        "--flag",
        flag.key,
        "--reason",
        "crash test",
    )
    run_id = int(re.search(r"rollback run (\d+) started", out).group(1))
    # When: SIGKILL worker A while the deploy script sleeps, then start worker B
    _wait_for(lambda: calls(tmp_path), 60, "the deploy script to start")
    os.kill(worker_a.pid, signal.SIGKILL)
    worker_a.wait(timeout=10)
    step = RollbackStep.objects.get(run_id=run_id, level=2)
    assert step.status == StepStatus.RUNNING
    _wait_for(
        lambda: (tmp_path / "current").exists(), 10, "the orphaned script to finish"
    )
    # The dead worker's claim holds until its lease ends; only then may
    # another worker take the step over.
    time.sleep(max(0.0, (step.lease_expires_at - timezone.now()).total_seconds() + 0.2))
    workers("b")
    _manage(process_env, "rollback", "resume", str(run_id))  # what the reaper does
    # Then
    run = _wait_for(
        lambda: v2.rollback_runs.filter(
            pk=run_id, status__in=["succeeded", "failed"]
        ).first(),
        60,
        "the run to finish",
    )
    step.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert calls(tmp_path) == ["shop v1"]
    assert AuditEvent.objects.filter(action="flag_state.killed").count() == 1
    assert step.attempts == 2 and "verified after an interrupted attempt" in step.output
    assert (
        AuditEvent.objects.filter(
            action="rollback.step_reclaimed", target_id=str(step.pk)
        ).count()
        == 1
    )
    assert (
        AuditEvent.objects.filter(
            action="deployment.reverted", target_id=str(v2.pk)
        ).count()
        == 1
    )
    assert audit_chain_verify().ok
