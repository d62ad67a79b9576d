"""The controller on the database with real providers: outcome events
reported through the ingestion service, a live local HTTP server, SQL on
the test database. Celery runs eagerly; on-commit callbacks run only where
a test executes them (``django_capture_on_commit_callbacks(execute=True)``).
"""

from __future__ import annotations

import time

import pytest
from prometheus_client import REGISTRY

from canary import services
from canary.controller import controller_tick
from canary.models import CheckRun, HealthCheck, Rollout, RolloutStatus
from canary.tasks import rollout_tick_task
from controlplane.audit.actors import CONTROLLER, SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from flags import services as flag_services
from rollback.models import RollbackRun
from tests.canary_controller.conftest import (
    SAMPLE,
    answers,
    http_check,
    outcomes_check,
    share_on,
    sql_check,
)

Status = RolloutStatus


def _events(rollout: Rollout, action: str):
    return AuditEvent.objects.filter(
        action=action, target_type="canary.rollout", target_id=str(rollout.pk)
    ).order_by("id")


def _reload(rollout: Rollout) -> Rollout:
    return Rollout.objects.get(pk=rollout.pk)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_controller_tick__all_checks_pass__pilot_10_50_100_then_completed(
    rollout_factory, production, health_server, report_outcomes, settings
):
    # Given: http, outcomes and sql checks (on the default alias, listed for
    # SQL checks on purpose); the 10% phase lasts at least 1 s
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "CANARY_SQL_DATABASES": ["default"],
    }
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"]},
        {"name": "10%", "percentage": 10, "min_duration": 1},
        {"name": "50%", "percentage": 50},
        {"name": "100%", "percentage": 100},
    ]
    rollout = rollout_factory(
        phases=phases,
        checks=[http_check(health_server.url), outcomes_check(), sql_check()],
    )
    passes_before = _sample(
        "controlplane_canary_check_verdicts_total", provider="outcomes", verdict="pass"
    )
    seen: list[tuple[int, float]] = []
    # When: every tick measures the phase's checks and applies one transition
    report_outcomes(successes=60)
    controller_tick()
    seen.append(
        (_reload(rollout).current_phase, share_on(production, "sequential_workflow"))
    )
    report_outcomes(successes=60)
    held = controller_tick()
    held_phase = _reload(rollout).current_phase
    time.sleep(1.05)
    controller_tick()
    seen.append(
        (_reload(rollout).current_phase, share_on(production, "sequential_workflow"))
    )
    report_outcomes(successes=60)
    controller_tick()
    report_outcomes(successes=60)
    controller_tick()
    # Then
    done = _reload(rollout)
    assert held.measured == 3 and held.decisions == []
    assert held_phase == 1
    assert seen[0][0] == 1 and 0.05 < seen[0][1] < 0.15
    assert seen[1][0] == 2 and 0.4 < seen[1][1] < 0.6
    assert done.status == Status.COMPLETED
    assert share_on(production, "sequential_workflow") == 1.0
    advanced = list(_events(rollout, "rollout.phase_advanced"))
    assert [e.after["phase"] for e in advanced] == [1, 2, 3]
    assert all(e.actor_type == "controller" for e in advanced)
    assert advanced[0].details["decision"] == "advance"
    names = {"health", "error_rate", "orphans"}
    assert {c["check"] for c in advanced[0].details["checks"]} == names
    completed = _events(rollout, "rollout.completed").get()
    assert set(completed.details["checks"]) == {"health", "error_rate", "orphans"}
    assert completed.details["checks"]["error_rate"]["verdicts"]["pass"] == 5
    assert CheckRun.objects.filter(rollout=rollout, verdict="pass").count() == 15
    assert (
        _sample(
            "controlplane_canary_check_verdicts_total",
            provider="outcomes",
            verdict="pass",
        )
        == passes_before + 5
    )
    assert audit_chain_verify().ok


def test_controller_tick__min_samples_not_reached__holds(
    rollout_factory, health_server
):
    # Given: two passing samples needed, the check measured once per second
    rollout = rollout_factory(checks=[http_check(health_server.url, min_samples=2)])
    # When
    first = controller_tick()
    second = controller_tick()  # not due yet: nothing measured, nothing moves
    # Then
    assert (first.measured, second.measured) == (1, 0)
    assert _reload(rollout).current_phase == 0
    assert not _events(rollout, "rollout.phase_advanced").exists()


def _setup_captured_state(flag, production, merchants) -> None:
    """A flag already on for one merchant by override, off for everyone else."""
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


def test_controller_tick__regression_at_50_percent__rollback_level_1_restores_flag(
    rollout_factory,
    flag,
    production,
    merchants,
    report_outcomes,
    django_capture_on_commit_callbacks,
):
    # Given: a rollout at 50% whose treatment starts failing
    _setup_captured_state(flag, production, merchants)
    keys = ["m-pilot", "m-pilot-2", *SAMPLE]
    before = answers(production, flag.key, keys)
    rollout = rollout_factory(checks=[outcomes_check(failure_limit=0)])
    for _ in range(2):
        report_outcomes(successes=60)
        controller_tick()
    assert _reload(rollout).current_phase == 2
    assert answers(production, flag.key, keys) != before
    report_outcomes(successes=40, failures=20)
    rollbacks_before = _sample(
        "controlplane_canary_automatic_rollbacks_total", cause="outcomes"
    )
    # When: the tick's commit runs the rollback run (eager) and re-ticks
    with django_capture_on_commit_callbacks(execute=True):
        report = controller_tick()
    # Then
    done = _reload(rollout)
    assert done.status == Status.ROLLED_BACK
    assert answers(production, flag.key, keys) == before
    run = RollbackRun.objects.get(trigger="rollout", trigger_ref=str(rollout.pk))
    assert (run.level, run.status) == (1, "succeeded")
    assert [d["action"] for d in report.decisions][:1] == ["fail:rollback_1"]
    failed = _events(rollout, "rollout.phase_failed").get()
    explained = failed.details["checks"][0]
    assert explained["check"] == "error_rate"
    assert explained["value"] == pytest.approx(20 / 60)
    assert (explained["comparator"], explained["threshold"]) == ("lt", 0.05)
    assert "failure_limit 0" in explained["limit"]
    assert explained["first_breach_at"] is not None
    assert (
        "error_rate" in failed.details["reason"] and "not <" in failed.details["reason"]
    )
    assert AuditEvent.objects.filter(action="check.failed").count() == 1
    assert (
        _sample("controlplane_canary_automatic_rollbacks_total", cause="outcomes")
        == rollbacks_before + 1
    )
    finished = (
        _events(rollout, "rollout.transition").filter(after__status="rolled_back").get()
    )
    assert finished.details["rollback_run"] == run.pk


def test_controller_tick__rolling_back_redelivered__rolled_back_once(
    rollout_factory, report_outcomes, django_capture_on_commit_callbacks
):
    # Given: a failure whose rollback run has executed
    rollout = rollout_factory(checks=[outcomes_check()])
    report_outcomes(failures=10)
    with django_capture_on_commit_callbacks(execute=True):
        controller_tick()
    # When: more ticks arrive
    controller_tick()
    controller_tick(rollout_id=rollout.pk)
    # Then
    assert _reload(rollout).status == Status.ROLLED_BACK
    assert _events(rollout, "rollout.rollback_started").count() == 1
    assert (
        _events(rollout, "rollout.transition")
        .filter(after__status="rolled_back")
        .count()
        == 1
    )


def test_controller_tick__erroring_check__holds_then_pauses_never_advances(
    rollout_factory, closed_url
):
    # Given: nobody listens on the check's port; one error is tolerated
    rollout = rollout_factory(
        checks=[
            http_check(closed_url, consecutive_error_limit=1, on_failure="rollback_1")
        ]
    )
    # When
    first = controller_tick()
    after_first = _reload(rollout)
    HealthCheck.objects.filter(rollout=rollout).update(
        next_due_at=None
    )  # due again now
    controller_tick()
    # Then
    assert first.verdicts == {"error": 1}
    assert (after_first.status, after_first.current_phase) == (Status.RUNNING, 0)
    paused = _reload(rollout)
    assert (paused.status, paused.current_phase) == (Status.PAUSED, 0)
    assert "health errored" in paused.pause_reason
    assert "consecutive_error_limit 1" in paused.pause_reason
    assert "refused" in paused.pause_reason.lower() or "error" in paused.pause_reason
    event = _events(rollout, "rollout.transition").filter(after__status="paused").get()
    assert event.actor_type == "controller"
    assert event.details["checks"][0]["status"] == "errored"
    assert not _events(rollout, "rollout.phase_advanced").exists()
    assert not RollbackRun.objects.exists()


def test_controller_tick__no_data_past_inconclusive_limit__pauses(rollout_factory):
    # Given: no outcome events at all
    rollout = rollout_factory(checks=[outcomes_check(inconclusive_limit=0)])
    # When
    controller_tick()
    # Then
    paused = _reload(rollout)
    assert paused.status == Status.PAUSED
    assert "error_rate inconclusive" in paused.pause_reason
    assert "inconclusive_limit 0" in paused.pause_reason


def test_controller_tick__max_duration_exceeded__pauses_with_limit(
    rollout_factory, health_server
):
    # Given: a phase that can never gather its samples within 1 s
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "max_duration": 1},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(
        phases=phases, checks=[http_check(health_server.url, min_samples=50)]
    )
    controller_tick()
    # When
    time.sleep(1.1)
    controller_tick()
    # Then
    paused = _reload(rollout)
    assert paused.status == Status.PAUSED
    assert paused.pause_reason.startswith("automatic pause: max_duration")
    assert (
        "1 of 50 passing samples" in paused.pause_reason
        or "2 of 50" in paused.pause_reason
    )


def test_controller_tick__on_failure_pause__pauses_and_does_not_repeat(
    rollout_factory, health_server
):
    # Given: the health endpoint answers 500 and the check pauses on failure
    health_server.status = 500
    rollout = rollout_factory(
        checks=[http_check(health_server.url, on_failure="pause")]
    )
    # When
    controller_tick()
    HealthCheck.objects.filter(rollout=rollout).update(next_due_at=None)
    controller_tick()
    # Then
    paused = _reload(rollout)
    assert paused.status == Status.PAUSED
    assert paused.pause_reason.startswith("automatic pause: check health failed")
    assert "not = 200" in paused.pause_reason
    assert _events(rollout, "rollout.phase_failed").count() == 1
    assert CheckRun.objects.filter(rollout=rollout).count() == 2  # checks never sleep


def test_controller_tick__approval_required__awaits_until_approved(
    rollout_factory, health_server, django_capture_on_commit_callbacks
):
    # Given: the pilot phase needs an operator's approval
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "requires_approval": True},
        {"name": "10%", "percentage": 10, "min_duration": 60},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    controller_tick()
    waiting = _reload(rollout)
    HealthCheck.objects.filter(rollout=rollout).update(next_due_at=None)
    controller_tick()
    still = _reload(rollout)
    # When: approved; the approval's commit ticks the rollout at once
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_approve(
            rollout_id=rollout.pk, actor=SYSTEM, reason="looks good"
        )
    # Then
    assert waiting.status == Status.AWAITING_APPROVAL
    assert still.status == Status.AWAITING_APPROVAL and still.current_phase == 0
    assert (
        _events(rollout, "rollout.transition")
        .filter(after__status="awaiting_approval")
        .count()
        == 1
    )
    approved = _reload(rollout)
    assert (approved.status, approved.current_phase) == (Status.RUNNING, 1)
    assert _events(rollout, "rollout.phase_advanced").get().actor_type == "controller"


def test_controller_tick__check_fails_while_awaiting_approval__rolls_back(
    rollout_factory,
    flag,
    production,
    merchants,
    health_server,
    django_capture_on_commit_callbacks,
):
    # Given: a rollout waiting for approval, then the health check breaks
    _setup_captured_state(flag, production, merchants)
    before = answers(production, flag.key, ["m-pilot", "m-pilot-2", *SAMPLE[:200]])
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"], "requires_approval": True},
        {"name": "all", "percentage": 100},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    controller_tick()
    assert _reload(rollout).status == Status.AWAITING_APPROVAL
    health_server.status = 503
    HealthCheck.objects.filter(rollout=rollout).update(next_due_at=None)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        controller_tick()
    # Then
    assert _reload(rollout).status == Status.ROLLED_BACK
    assert (
        answers(production, flag.key, ["m-pilot", "m-pilot-2", *SAMPLE[:200]]) == before
    )
    failed = _events(rollout, "rollout.phase_failed").get()
    assert failed.details["while"] == "awaiting_approval"


def test_controller_tick__check_fails_while_paused__rolls_back(
    rollout_factory, health_server, django_capture_on_commit_callbacks
):
    # Given: an operator paused the rollout
    rollout = rollout_factory(checks=[http_check(health_server.url)])
    services.rollout_pause(rollout_id=rollout.pk, actor=SYSTEM, reason="lunch")
    health_server.status = 500
    # When
    with django_capture_on_commit_callbacks(execute=True):
        controller_tick()
    # Then
    assert _reload(rollout).status == Status.ROLLED_BACK
    assert _events(rollout, "rollout.phase_failed").get().details["while"] == "paused"


def test_controller_tick__paused_and_passing__stays_paused(
    rollout_factory, health_server
):
    # Given
    rollout = rollout_factory(checks=[http_check(health_server.url)])
    services.rollout_pause(rollout_id=rollout.pk, actor=SYSTEM, reason="lunch")
    # When
    report = controller_tick()
    # Then
    assert report.measured == 1
    paused = _reload(rollout)
    assert (paused.status, paused.current_phase, paused.pause_reason) == (
        Status.PAUSED,
        0,
        "lunch",
    )


def test_rollout_tick_task__redelivered__advances_once(rollout_factory, health_server):
    # Given: the next phase holds for a minute
    phases = [
        {"name": "pilot", "pilot_merchants": ["m-pilot"]},
        {"name": "10%", "percentage": 10, "min_duration": 60},
    ]
    rollout = rollout_factory(phases=phases, checks=[http_check(health_server.url)])
    # When: the same task is delivered twice
    rollout_tick_task.apply(kwargs={"rollout_id": rollout.pk})
    rollout_tick_task.apply(kwargs={"rollout_id": rollout.pk})
    # Then
    assert _reload(rollout).current_phase == 1
    assert _events(rollout, "rollout.phase_advanced").count() == 1
    assert CheckRun.objects.filter(rollout=rollout, phase_index=0).count() == 1


def test_controller_tick__gate_opens__next_tick_scheduled_on_commit(
    rollout_factory, health_server, django_capture_on_commit_callbacks
):
    # Given: every phase opens as soon as its check passes once
    rollout = rollout_factory(checks=[http_check(health_server.url)])
    # When: the commit of each advance ticks the rollout again at once
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        controller_tick()
    # Then: one beat tick carried the rollout through all four phases
    assert len(callbacks) >= 1
    assert _reload(rollout).status == Status.COMPLETED
    assert _events(rollout, "rollout.phase_advanced").count() == 3


def test_controller_tick__slow_check__bounded_by_its_timeout(
    rollout_factory, health_server
):
    # Given: an endpoint that answers after 3 s and a 0.5 s timeout
    rollout = rollout_factory(
        checks=[http_check(f"{health_server.base}/sleep/3", timeout=0.5)]
    )
    # When
    started = time.monotonic()
    report = controller_tick()
    elapsed = time.monotonic() - started
    # Then
    assert report.verdicts == {"error": 1}
    assert elapsed < 2.0
    run = CheckRun.objects.get(rollout=rollout)
    assert "timed out" in run.detail["error"]


def test_controller_tick__draft_and_finished_rollouts__ignored(
    rollout_factory, health_server
):
    # Given
    rollout = rollout_factory(checks=[http_check(health_server.url)], start=False)
    # When
    report = controller_tick()
    # Then
    assert report.rollouts == [] and report.measured == 0
    assert _reload(rollout).status == Status.DRAFT


def test_metrics__scrape__rollouts_by_status_and_phase(
    rollout_factory, health_server, client
):
    # Given: the collector is registered at startup (CanaryConfig.ready)
    rollout = rollout_factory(checks=[http_check(health_server.url)])
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason="test"
    )
    # When
    body = client.get("/metrics").content.decode()
    # Then
    assert 'controlplane_canary_rollouts{status="running"} 1.0' in body
    assert 'controlplane_canary_rollouts{status="completed"} 0.0' in body
    assert f'controlplane_canary_rollout_phase{{rollout="{rollout.pk}"}} 1.0' in body
    assert "controlplane_canary_breach_to_rollback_seconds_bucket" in body


def test_controller_tick__rollback_run_never_started__queued_again_then_rolled_back(
    rollout_factory, flag, production, report_outcomes
):
    # Given: a rollback whose task message was lost (its commit never ran
    # the on-commit queueing here), created 10 s ago
    import datetime as dt

    rollout = rollout_factory(checks=[outcomes_check()])
    report_outcomes(failures=10)
    controller_tick()
    assert _reload(rollout).status == Status.ROLLING_BACK
    RollbackRun.objects.update(
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=10)
    )
    # When: the next tick finds it still pending, queues it (run eagerly here)
    controller_tick()
    controller_tick()
    # Then
    assert RollbackRun.objects.get().status == "succeeded"
    assert _reload(rollout).status == Status.ROLLED_BACK
    assert answers(production, flag.key, ["m-pilot", *SAMPLE[:100]]) == {
        key: False for key in ["m-pilot", *SAMPLE[:100]]
    }
