"""Two workers on one run at once: row locks let only one execute the step."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from rollback.executor import rollback_run_execute
from rollback.models import RunStatus
from rollback.services import rollback_run_start
from tests.rollback.conftest import calls


@pytest.mark.postgres
@pytest.mark.slow
def test_two_workers__same_run_at_once__step_executed_once(
    transactional_db,
    deployment_pair,
    deploy_script,
    tmp_path,
    rollback_settings,
    actor,
    monkeypatch,
):
    # Given: a queued run whose deploy step takes a second
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
                "env": {"DEPLOY_SLEEP": "1"},
            }
        }
    )
    # Leave the run queued for the two threads below instead of running the
    # eager task at commit (the threads play the two workers).
    monkeypatch.setattr(
        "rollback.services.runs._queue", lambda run_id, countdown=None: None
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    assert run.status == RunStatus.PENDING and calls(tmp_path) == []
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            barrier.wait()
            rollback_run_execute(run_id=run.pk, worker=name)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    # When
    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then
    run.refresh_from_db()
    assert errors == []
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path) == ["shop v1"]
    step = run.steps.get(level=2)
    assert step.attempts == 1 and step.claimed_by in ("w0", "w1")
