"""Rollback runs: steps in order, audit, bad input, claims, retries, crash recovery."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from controlplane.exceptions import Conflict, InvalidInput, InvalidTransition, NotFound
from flags import services as flag_services
from flags.models import FlagState, MerchantOverride
from rollback.executor import rollback_run_execute
from rollback.models import RollbackRun, RollbackStep, RunStatus, StepStatus
from rollback.services import (
    deployment_record,
    flag_capture,
    rollback_run_retry,
    rollback_run_start,
    rollback_step_claim,
)
from rollback.transitions import RUN_ALLOWED, STEP_ALLOWED, run_can_move, step_can_move
from tests.rollback.conftest import calls


@pytest.fixture
def rolled_out_flag(production, flag_factory, merchant_factory, actor):
    """A bool flag captured at 10%, then moved to 50% with a pilot override added."""
    flag = flag_factory("sequential_workflow")
    old, pilot = merchant_factory("m-old"), merchant_factory("m-pilot")
    flag_services.flag_state_set_enabled(
        actor=actor, flag=flag, environment=production, enabled=True
    )
    flag_services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=production, percentage=10
    )
    flag_services.override_set(
        actor=actor, flag=flag, environment=production, merchant=old, variation="on"
    )
    captured = flag_capture(flag=flag, environment=production)
    flag_services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=production, percentage=50
    )
    flag_services.override_set(
        actor=actor, flag=flag, environment=production, merchant=pilot, variation="on"
    )
    return flag, captured


def test_run_level_1__captured_state__percentage_back_and_pilot_override_removed(
    production, rolled_out_flag, actor, run_now
):
    # Given
    flag, captured = rolled_out_flag
    # When
    run = run_now(
        actor=actor,
        level=1,
        reason="check failed",
        flag_restore=captured,
        trigger="check",
        trigger_ref="rollout:7",
    )
    # Then
    state = FlagState.objects.get(flag=flag, environment=production)
    assert run.status == RunStatus.SUCCEEDED
    assert state.percentage == 10
    assert sorted(
        MerchantOverride.objects.filter(flag=flag).values_list(
            "merchant__key", flat=True
        )
    ) == ["m-old"]
    actions = list(AuditEvent.objects.order_by("id").values_list("action", flat=True))
    assert actions[-7:] == [
        "rollback.run_created",
        "rollback.run_started",
        "rollback.step_started",
        "override.removed",
        "flag_state.restored_snapshot",
        "rollback.step_succeeded",
        "rollback.run_completed",
    ]
    assert (
        AuditEvent.objects.filter(action="override.removed", actor_name="alice").count()
        == 1
    )
    assert (
        AuditEvent.objects.filter(
            action="rollback.run_completed", target_id=str(run.pk)
        ).count()
        == 1
    )
    assert audit_chain_verify().ok


def test_run_level_1__no_snapshot__kills_flag(production, flag_factory, actor, run_now):
    # Given
    flag = flag_factory("enable_supplier_policy")
    flag_services.flag_state_set_enabled(
        actor=actor, flag=flag, environment=production, enabled=True
    )
    # When
    run = run_now(
        actor=actor,
        level=1,
        reason="errors",
        flag_restore={"flag": flag.key, "environment": "production", "snapshot": None},
    )
    # Then
    state = FlagState.objects.get(flag=flag, environment=production)
    assert run.status == RunStatus.SUCCEEDED
    assert state.enabled is False and state.killed_at is not None
    assert AuditEvent.objects.filter(action="flag_state.killed").count() == 1


def test_run_level_2__no_flag__flag_step_skipped_and_steps_ordered(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    run = run_now(actor=actor, level=2, reason="errors", deployment=v2.pk)
    # Then
    steps = list(run.steps.values_list("position", "actuator", "status"))
    assert steps == [
        (1, "flag_toggle", "skipped"),
        (2, "deployment_revert", "succeeded"),
    ]


@pytest.mark.parametrize("level", [0, 4, "x", None])
def test_run_start__level_outside_1_to_3__invalid_input_nothing_written(
    deployment_pair, actor, level
):
    # Given
    _, v2 = deployment_pair
    events = AuditEvent.objects.count()
    # When
    with pytest.raises(InvalidInput) as info:
        rollback_run_start(actor=actor, level=level, reason="x", deployment=v2)
    # Then
    assert info.value.field == "level"
    assert RollbackRun.objects.count() == 0 and AuditEvent.objects.count() == events


def test_run_start__unknown_deployment__not_found(db, actor):
    # Given / When
    with pytest.raises(NotFound) as info:
        rollback_run_start(actor=actor, level=2, reason="x", deployment=999)
    # Then
    assert info.value.message == "deployment 999 does not exist"
    assert RollbackRun.objects.count() == 0


def test_run_start__no_previous_deployment__conflict_names_reason(
    production, releases, rollback_settings, actor
):
    # Given
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    first = deployment_record(
        actor=SYSTEM,
        service="api",
        environment=production,
        version="v1",
        migration_state={},
    )
    # When
    with pytest.raises(Conflict) as info:
        rollback_run_start(actor=actor, level=2, reason="x", deployment=first)
    # Then
    assert "has no previous deployment" in info.value.message
    assert RollbackRun.objects.count() == 0


def test_run_start__named_backend_not_configured__invalid_input_on_backend(
    deployment_pair, releases, rollback_settings, actor
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    # When
    with pytest.raises(InvalidInput) as info:
        rollback_run_start(
            actor=actor, level=2, reason="x", deployment=v2, backend="k8s"
        )
    # Then
    assert info.value.field == "backend"
    assert "deploy backend 'k8s' is not configured" in info.value.message
    assert RollbackRun.objects.count() == 0


def test_run_start__level_1_without_flag__invalid_input(db, actor):
    with pytest.raises(InvalidInput) as info:
        rollback_run_start(actor=actor, level=1, reason="x")
    assert info.value.field == "flag_restore"


def test_run_start__run_in_progress__conflict(
    deployment_pair, releases, rollback_settings, actor
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    first = rollback_run_start(
        actor=actor, level=2, reason="x", deployment=v2
    )  # queued, not run
    # When
    with pytest.raises(Conflict) as info:
        rollback_run_start(actor=actor, level=2, reason="again", deployment=v2)
    # Then
    assert f"rollback run {first.pk} is already in progress" in info.value.message


def test_step_claim__second_worker__gets_nothing_while_lease_live(
    deployment_pair, releases, rollback_settings, actor
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    # When
    first = rollback_step_claim(run_id=run.pk, worker="w1")
    second = rollback_step_claim(run_id=run.pk, worker="w2")
    # Then
    assert first is not None and first.actuator == "deployment_revert"
    assert second is None
    assert RollbackStep.objects.get(pk=first.step_id).claimed_by == "w1"


def test_step_found_running__target_already_true__verified_not_rerun(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given: a worker claimed the step, the script ran, then the worker died
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
                "verify_argv": [str(deploy_script), "status"],
            }
        }
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    claim = rollback_step_claim(run_id=run.pk, worker="dead")
    (tmp_path / "current").write_text("v1\n")
    (tmp_path / "calls.log").write_text("shop v1\n")
    RollbackStep.objects.filter(pk=claim.step_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # When
    rollback_run_execute(run_id=run.pk, worker="new")
    # Then
    run.refresh_from_db()
    step = RollbackStep.objects.get(pk=claim.step_id)
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path) == ["shop v1"]
    assert step.attempts == 2 and "verified after an interrupted attempt" in step.output
    assert (
        AuditEvent.objects.filter(
            action="rollback.step_reclaimed", target_id=str(step.pk)
        ).count()
        == 1
    )
    v2.refresh_from_db()
    assert v2.status == "reverted"


def test_step_found_running__target_not_reached__rerun_once(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given: the worker died before the script ran
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
                "verify_argv": [str(deploy_script), "status"],
            }
        }
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    claim = rollback_step_claim(run_id=run.pk, worker="dead")
    RollbackStep.objects.filter(pk=claim.step_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # When
    rollback_run_execute(run_id=run.pk, worker="new")
    rollback_run_execute(run_id=run.pk, worker="duplicate delivery")
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path) == ["shop v1"]


def test_run_retry__failed_run__resumes_from_failed_step(
    deployment_pair,
    deploy_script,
    tmp_path,
    rollback_settings,
    actor,
    run_now,
    django_capture_on_commit_callbacks,
):
    # Given
    _, v2 = deployment_pair
    backend = {
        "type": "command",
        "idempotent": True,
        "argv": [str(deploy_script), "{service}", "{version}"],
    }
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=1,
        ROLLBACK_DEPLOY_BACKENDS={"default": {**backend, "env": {"DEPLOY_EXIT": "1"}}},
    )
    run = run_now(actor=actor, level=2, reason="x", deployment=v2)
    assert run.status == RunStatus.FAILED
    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={"default": backend})
    # When
    with django_capture_on_commit_callbacks(execute=True):
        rollback_run_retry(actor=actor, run_id=run.pk)
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED and run.error == ""
    assert len(calls(tmp_path)) == 2
    assert (
        AuditEvent.objects.filter(
            action="rollback.run_retried", target_id=str(run.pk)
        ).count()
        == 1
    )
    assert audit_chain_verify().ok


def test_run_retry__succeeded_run__invalid_transition(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    run = run_now(actor=actor, level=2, reason="x", deployment=v2)
    # When / Then
    with pytest.raises(InvalidTransition):
        rollback_run_retry(actor=actor, run_id=run.pk)


def test_run_execute__redelivered_after_success__no_new_events(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    run = run_now(actor=actor, level=2, reason="x", deployment=v2)
    events = AuditEvent.objects.count()
    # When
    rollback_run_execute(run_id=run.pk)
    # Then
    assert AuditEvent.objects.count() == events


@pytest.mark.parametrize(
    "current,to",
    [
        ("pending", "running"),
        ("running", "succeeded"),
        ("running", "failed"),
        ("failed", "running"),
    ],
)
def test_run_transitions__allowed__accepted(current, to):
    assert run_can_move(current, to)


@pytest.mark.parametrize(
    "current,to",
    [
        ("succeeded", "running"),
        ("succeeded", "failed"),
        ("pending", "succeeded"),
        ("failed", "succeeded"),
    ],
)
def test_run_transitions__forbidden__refused(current, to):
    assert not run_can_move(current, to)


def test_step_transitions__succeeded_and_skipped__final():
    assert (
        STEP_ALLOWED[StepStatus.SUCCEEDED]
        == frozenset()
        == STEP_ALLOWED[StepStatus.SKIPPED]
    )
    assert step_can_move("running", "running") and not step_can_move(
        "succeeded", "running"
    )
    assert set(RUN_ALLOWED) == set(RunStatus.values)


def test_metrics__run_and_steps__counters_incremented(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given
    from prometheus_client import REGISTRY

    def value(name, labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    runs = value(
        "controlplane_rollback_runs_total", {"level": "2", "outcome": "succeeded"}
    )
    steps = value(
        "controlplane_rollback_steps_total",
        {"actuator": "deployment_revert", "outcome": "succeeded"},
    )
    # When
    run_now(actor=actor, level=2, reason="x", deployment=v2)
    # Then
    assert (
        value(
            "controlplane_rollback_runs_total", {"level": "2", "outcome": "succeeded"}
        )
        == runs + 1
    )
    assert (
        value(
            "controlplane_rollback_steps_total",
            {"actuator": "deployment_revert", "outcome": "succeeded"},
        )
        == steps + 1
    )


def test_runs_resume__run_without_progress__queued_and_finished(
    deployment_pair, releases, rollback_settings, actor
):
    # Given: a run whose task was lost (never executed)
    from rollback.services import rollback_runs_resume

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    RollbackRun.objects.filter(pk=run.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    # When
    resumed = rollback_runs_resume(stale_after_seconds=60)
    # Then
    run.refresh_from_db()
    assert resumed == [run.pk]
    assert run.status == RunStatus.SUCCEEDED


def test_run_level_1__captured_at_only__overrides_created_since_removed(
    production, flag_factory, merchant_factory, actor, run_now
):
    # Given
    flag = flag_factory("checkout_theme_bool")
    old, pilot = merchant_factory("m-1"), merchant_factory("m-2")
    flag_services.override_set(
        actor=actor, flag=flag, environment=production, merchant=old, variation="on"
    )
    state = FlagState.objects.get(flag=flag, environment=production)
    restore = {
        "flag": flag.key,
        "environment": "production",
        "snapshot": flag_services.state_snapshot(state),
        "captured_at": timezone.now(),
    }
    flag_services.override_set(
        actor=actor, flag=flag, environment=production, merchant=pilot, variation="on"
    )
    # When
    run = run_now(actor=actor, level=1, reason="x", flag_restore=restore)
    # Then
    assert run.status == RunStatus.SUCCEEDED
    assert list(
        MerchantOverride.objects.filter(flag=flag).values_list(
            "merchant__key", flat=True
        )
    ) == ["m-1"]


def test_step_found_running__attempts_exhausted__failed_not_rerun(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given: every worker so far died on this step
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_MAX_ATTEMPTS=2,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": {
                "type": "command",
                "idempotent": True,
                "argv": [str(deploy_script), "{service}", "{version}"],
            }
        },
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    for worker in ("dead-1", "dead-2"):
        claim = rollback_step_claim(run_id=run.pk, worker=worker)
        RollbackStep.objects.filter(pk=claim.step_id).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
    # When
    rollback_run_execute(run_id=run.pk, worker="third")
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and "gave up" in run.error
    assert calls(tmp_path) == []


def test_run_escalation__level_3_after_level_2__deployment_step_skipped(
    deployment_pair, releases, rollback_settings, actor, run_now
):
    # Given: a level-2 run already reverted v2
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": {"type": "symlink", "root": str(releases)}}
    )
    run_now(actor=actor, level=2, reason="first", deployment=v2)
    # When
    run = run_now(actor=actor, level=3, reason="still failing", deployment=v2)
    # Then
    assert run.status == RunStatus.SUCCEEDED
    assert list(run.steps.values_list("actuator", "status")) == [
        ("flag_toggle", "skipped"),
        ("deployment_revert", "skipped"),
        ("migration_revert", "succeeded"),
    ]
    assert AuditEvent.objects.filter(action="deployment.reverted").count() == 1


def _verifying_backend(deploy_script, **extra) -> dict:
    return {
        "type": "command",
        "argv": [str(deploy_script), "{service}", "{version}"],
        "verify_argv": [str(deploy_script), "status"],
        **extra,
    }


def test_step_claim__command_backend_default_settings__lease_under_30s(
    deployment_pair, deploy_script, rollback_settings, actor
):
    # Given: a command backend with the default 300 s timeout
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    # When
    before = timezone.now()
    claim = rollback_step_claim(run_id=run.pk, worker="w1")
    # Then: the lease is renewed by heartbeats, so it can be short
    step = RollbackStep.objects.get(pk=claim.step_id)
    assert (step.lease_expires_at - before).total_seconds() <= 15.5


@pytest.mark.postgres
@pytest.mark.slow
def test_step_lease__command_outlives_its_lease__heartbeats_keep_the_claim(
    transactional_db,
    deployment_pair,
    deploy_script,
    tmp_path,
    rollback_settings,
    actor,
    monkeypatch,
):
    # Given: a 0.5 s lease renewed every 0.2 s, and a command taking 2 s
    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_STEP_HEARTBEAT_SECONDS=0.2,
        ROLLBACK_STEP_LEASE_GRACE_SECONDS=0.3,
        ROLLBACK_DEPLOY_BACKENDS={
            "default": _verifying_backend(deploy_script, env={"DEPLOY_SLEEP": "2"})
        },
    )
    monkeypatch.setattr(
        "rollback.services.runs._queue", lambda run_id, countdown=None: None
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)

    def worker() -> None:
        try:
            rollback_run_execute(run_id=run.pk, worker="live")
        finally:
            connection.close()

    thread = threading.Thread(target=worker)
    thread.start()
    # When: another worker tries to take the step well past the first lease
    try:
        started = timezone.now()
        step = _wait_for_step(run, lambda s: s.process_group is not None)
        time.sleep(1.2)
        other = rollback_step_claim(run_id=run.pk, worker="other")
        step.refresh_from_db()
    finally:
        thread.join(timeout=30)
    # Then
    assert other is None
    assert step.lease_expires_at > started + timedelta(seconds=1.2)
    run.refresh_from_db()
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path, "effects.log") == ["shop v1"]
    assert run.steps.get(level=2).attempts == 1


def _wait_for_step(run, predicate, timeout: float = 10.0) -> RollbackStep:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        step = run.steps.get(level=2)
        if predicate(step):
            return step
        time.sleep(0.05)
    raise AssertionError("the step never got there")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_step_reclaimed__leftover_group_on_this_host__killed_before_verify(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given: a dead worker's command group still running on this host
    from rollback.actuators.processes import host_name, step_tag
    from rollback.actuators.supervisor import TAG_VARIABLE

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    claim = rollback_step_claim(run_id=run.pk, worker="dead")
    leftover = subprocess.Popen(
        ["sleep", "60"],
        start_new_session=True,
        env={**os.environ, TAG_VARIABLE: step_tag(claim.step_id)},
    )
    try:
        RollbackStep.objects.filter(pk=claim.step_id).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1),
            process_group=leftover.pid,
            process_host=host_name(),
        )
        # When
        rollback_run_execute(run_id=run.pk, worker="new")
        # Then
        assert leftover.wait(timeout=5) < 0
    finally:
        leftover.kill()
        leftover.wait()
    run.refresh_from_db()
    step = RollbackStep.objects.get(pk=claim.step_id)
    assert run.status == RunStatus.SUCCEEDED
    assert f"killed leftover process group {leftover.pid}" in step.output
    assert calls(tmp_path, "effects.log") == ["shop v1"]
    reclaimed = AuditEvent.objects.get(
        action="rollback.step_reclaimed", target_id=str(step.pk)
    )
    assert reclaimed.details["abandoned_process_group"].startswith(f"{leftover.pid}@")


def test_runs_resume__step_lease_expired__queued_at_once(
    deployment_pair, deploy_script, rollback_settings, actor, tmp_path
):
    # Given: a worker died a moment ago (its lease just expired)
    from rollback.services import rollback_runs_resume

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    claim = rollback_step_claim(run_id=run.pk, worker="dead")
    RollbackStep.objects.filter(pk=claim.step_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # When
    resumed = rollback_runs_resume(stale_after_seconds=60)
    # Then
    run.refresh_from_db()
    assert resumed == [run.pk]
    assert run.status == RunStatus.SUCCEEDED
    assert calls(tmp_path, "effects.log") == ["shop v1"]


def test_runs_resume__live_lease_on_old_run__not_queued(
    deployment_pair, deploy_script, rollback_settings, actor
):
    # Given: a long step whose worker still renews its lease
    from rollback.services import rollback_runs_resume

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    rollback_step_claim(run_id=run.pk, worker="alive")
    RollbackRun.objects.filter(pk=run.pk).update(
        updated_at=timezone.now() - timedelta(minutes=5)
    )
    # When
    resumed = rollback_runs_resume(stale_after_seconds=60)
    # Then
    assert resumed == []


def test_step_execute__backend_unbound_since_start__failed_not_run(
    deployment_pair, deploy_script, tmp_path, rollback_settings, actor
):
    # Given: the run was started with backend "shop"; settings then bind
    # "shop" to another service before a worker executes the step
    _, v2 = deployment_pair
    backend = _verifying_backend(deploy_script)
    rollback_settings(ROLLBACK_DEPLOY_BACKENDS={"shop": backend})
    run = rollback_run_start(
        actor=actor, level=2, reason="x", deployment=v2, backend="shop"
    )
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"shop": {**backend, "services": ["catalog"]}}
    )
    # When
    rollback_run_execute(run_id=run.pk, worker="w")
    # Then
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert "may not revert service 'shop'" in run.error
    assert calls(tmp_path) == []


def test_step_heartbeat__claim_held__lease_renewed_never_shortened(
    deployment_pair, deploy_script, rollback_settings, actor
):
    # Given: a claimed step whose lease someone set far ahead
    from rollback.services import rollback_step_heartbeat

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    claim = rollback_step_claim(run_id=run.pk, worker="w1")
    soon = timezone.now() + timedelta(seconds=1)
    RollbackStep.objects.filter(pk=claim.step_id).update(lease_expires_at=soon)
    events = AuditEvent.objects.count()
    # When
    renewed = rollback_step_heartbeat(claim=claim)
    after_renewal = RollbackStep.objects.get(pk=claim.step_id).lease_expires_at
    far = timezone.now() + timedelta(hours=1)
    RollbackStep.objects.filter(pk=claim.step_id).update(lease_expires_at=far)
    rollback_step_heartbeat(claim=claim)
    # Then
    assert renewed is True
    assert after_renewal > soon + timedelta(seconds=10)
    assert RollbackStep.objects.get(pk=claim.step_id).lease_expires_at == far
    assert AuditEvent.objects.count() == events  # bookkeeping, not a state change


def test_step_heartbeat__claim_taken_over__false_and_lease_untouched(
    deployment_pair, deploy_script, rollback_settings, actor
):
    # Given: the step was taken over by another worker after the lease expired
    from rollback.services import rollback_step_heartbeat

    _, v2 = deployment_pair
    rollback_settings(
        ROLLBACK_DEPLOY_BACKENDS={"default": _verifying_backend(deploy_script)}
    )
    run = rollback_run_start(actor=actor, level=2, reason="x", deployment=v2)
    stale = rollback_step_claim(run_id=run.pk, worker="slow")
    RollbackStep.objects.filter(pk=stale.step_id).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )
    fresh = rollback_step_claim(run_id=run.pk, worker="new")
    lease = RollbackStep.objects.get(pk=fresh.step_id).lease_expires_at
    # When
    renewed = rollback_step_heartbeat(claim=stale)
    # Then
    assert renewed is False
    assert RollbackStep.objects.get(pk=fresh.step_id).lease_expires_at == lease


def test_step_claim__flag_step_default_settings__lease_under_30s(
    rolled_out_flag, actor
):
    # Given
    flag, captured = rolled_out_flag
    run = rollback_run_start(actor=actor, level=1, reason="x", flag_restore=captured)
    # When
    before = timezone.now()
    claim = rollback_step_claim(run_id=run.pk, worker="w1")
    # Then: a dead worker's flag step is retried within lease + reaper period
    step = RollbackStep.objects.get(pk=claim.step_id)
    assert claim.actuator == "flag_toggle"
    assert (step.lease_expires_at - before).total_seconds() <= 20.5
