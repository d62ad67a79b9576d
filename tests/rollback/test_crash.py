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
from tests.rollback.conftest import calls, is_alive

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


def _backend(deploy_script: Path, *, verifies: bool) -> dict:
    backend = {
        "type": "command",
        "argv": [str(deploy_script), "{service}", "{version}"],
        "timeout": 60,
        "env": {"DEPLOY_SLEEP": "3"},
    }
    if verifies:
        backend["verify_argv"] = [str(deploy_script), "status"]
    else:
        backend["idempotent"] = True
    return backend


@pytest.fixture
def process_env(tmp_path, deploy_script, request):
    """Environment for worker and command processes sharing the test database.

    Lease, heartbeat and reaper settings are the project's defaults: the
    recovery time measured is the one production gets.
    """
    db = connection.settings_dict
    auth = db["USER"] + (f":{db['PASSWORD']}" if db.get("PASSWORD") else "")
    verifies = getattr(request, "param", True)
    controlplane = {
        "RULESET_BACKGROUND": False,
        "ROLLBACK_DEPLOY_BACKENDS": {
            "default": _backend(deploy_script, verifies=verifies)
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

    def start(name: str, *, beat: bool = False) -> subprocess.Popen:
        log = open(tmp_path / f"{name}.log", "w")
        extra = ["-B", "-s", str(tmp_path / f"{name}-beat-schedule")] if beat else []
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
                *extra,
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


def _group_members(pgid: int) -> list[int]:
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[-1].split()
        except OSError:
            continue
        if fields[2] == str(pgid) and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    "process_env", [True, False], ids=["verify_argv", "idempotent"], indirect=True
)
def test_worker_killed_mid_step__command_dies_and_reaper_recovers__side_effect_once(
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
    _wait_for(lambda: calls(tmp_path, "pids.log"), 60, "the deploy script to start")
    script_pid = int(calls(tmp_path, "pids.log")[0])
    step = _wait_for(
        lambda: RollbackStep.objects.filter(
            run_id=run_id, level=2, process_group__isnull=False
        ).first(),
        10,
        "the step to record its process group",
    )
    pgid = step.process_group
    assert script_pid in _group_members(pgid)
    # When: SIGKILL worker A while the deploy script sleeps; worker B runs
    # with beat, whose reaper is the only thing that re-queues the run.
    os.kill(worker_a.pid, signal.SIGKILL)
    killed_at = timezone.now()
    worker_a.wait(timeout=10)
    assert RollbackStep.objects.get(pk=step.pk).status == StepStatus.RUNNING
    workers("b", beat=True)
    # Then: the command's whole group is gone with its worker, before the
    # sleep ends, so the interrupted attempt never reaches its side effect
    _wait_for(lambda: not is_alive(script_pid), 5, "the deploy script to die")
    _wait_for(lambda: not _group_members(pgid), 5, "the process group to die")
    time.sleep(3.5)  # past DEPLOY_SLEEP: an orphan would have deployed by now
    assert calls(tmp_path, "effects.log") == []
    run = _wait_for(
        lambda: v2.rollback_runs.filter(
            pk=run_id, status__in=["succeeded", "failed"]
        ).first(),
        60,
        "the run to finish",
    )
    step.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert calls(tmp_path, "effects.log") == ["shop v1"]
    assert calls(tmp_path) == ["shop v1", "shop v1"]  # interrupted + re-run
    reclaimed = AuditEvent.objects.get(
        action="rollback.step_reclaimed", target_id=str(step.pk)
    )
    recovery = (reclaimed.created_at - killed_at).total_seconds()
    print(f"step picked up {recovery:.1f}s after the worker was SIGKILLed")
    assert recovery < 30, f"the step was picked up {recovery:.1f}s after the crash"
    assert AuditEvent.objects.filter(action="flag_state.killed").count() == 1
    assert step.attempts == 2
    assert (
        AuditEvent.objects.filter(
            action="deployment.reverted", target_id=str(v2.pk)
        ).count()
        == 1
    )
    assert audit_chain_verify().ok


@pytest.mark.slow
def test_worker_start__backend_cannot_verify_not_idempotent__refused_with_check_error(
    transactional_db, deploy_script, process_env, tmp_path
):
    # Given: a command backend without verify_argv, not marked idempotent
    env = {
        **process_env,
        "ROLLBACK_TEST_CONTROLPLANE": json.dumps(
            {
                "RULESET_BACKGROUND": False,
                "ROLLBACK_DEPLOY_BACKENDS": {
                    "shop": {"type": "command", "argv": [str(deploy_script)]}
                },
            }
        ),
    }
    # When
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "controlplane",
            "worker",
            "--pool=solo",
            "-Q",
            env["ROLLBACK_TEST_QUEUE"],
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then
    assert out.returncode != 0
    assert "rollback.E001" in out.stderr
    assert "command backend has no 'verify_argv'" in out.stderr
