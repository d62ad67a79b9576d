"""Rollout and check services against the real database and flag services."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from canary import services
from canary.exceptions import RolloutAlreadyActive, RolloutInvalidTransition
from canary.health import CheckStatus, GateAction
from canary.models import CheckRun, HealthCheck, Rollout, RolloutStatus
from controlplane.audit.actors import CONTROLLER, SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify
from controlplane.exceptions import Conflict, InvalidInput
from flags import engine, mappers
from flags import services as flag_services
from flags.models import FlagState, MerchantOverride

Status = RolloutStatus
SAMPLE = [f"merchant-{i:04d}" for i in range(2000)]


def _answers(environment, flag_key: str, keys: list[str]) -> dict[str, object]:
    ruleset = mappers.ruleset_compile(environment)
    return {
        key: engine.evaluate(ruleset, flag_key, {"merchant": key}).value for key in keys
    }


def _share_on(environment, flag_key: str) -> float:
    answers = _answers(environment, flag_key, SAMPLE)
    return sum(1 for value in answers.values() if value is True) / len(SAMPLE)


def _events(rollout: Rollout, action: str):
    return AuditEvent.objects.filter(
        action=action, target_type="canary.rollout", target_id=str(rollout.pk)
    )


def _pass_all_checks(rollout: Rollout) -> None:
    for check in rollout.checks.all():
        for _ in range(check.min_samples):
            services.check_run_record(
                check_id=check.pk,
                phase_index=rollout.current_phase,
                value=0.0,
                verdict="pass",
                detail={},
            )


# rollout_create ------------------------------------------------------------


def test_rollout_create__valid_plan__draft_with_phases_checks_and_audit(
    flag, production, merchants, actor
):
    # When
    rollout = services.rollout_create(
        actor=actor,
        flag=flag,
        environment=production,
        name="sequential workflow",
        phases=[
            {"pilot_merchants": ["m-pilot"]},
            {"percentage": 10, "min_duration": 60},
        ],
        checks=[
            {
                "name": "p95",
                "provider": "prometheus",
                "spec": {"query": "up"},
                "comparator": "lt",
                "threshold": 200,
            }
        ],
    )
    # Then
    assert rollout.status == Status.DRAFT
    assert (rollout.treatment_variation, rollout.control_variation) == ("on", "off")
    phases = list(
        rollout.phases.values_list(
            "index",
            "target_type",
            "percentage",
            "pilot_merchants",
            "name",
            "min_duration",
        )
    )
    assert phases == [
        (0, "pilot", None, ["m-pilot"], "pilot", 0),
        (1, "percentage", 10.0, [], "10%", 60),
    ]
    check = rollout.checks.get()
    assert (check.name, check.failure_limit, check.no_data, check.on_failure) == (
        "p95",
        0,
        "inconclusive",
        "rollback_1",
    )
    event = _events(rollout, "rollout.created").get()
    assert event.actor_name == "alice"
    assert event.after["flag"] == "sequential_workflow"


@pytest.mark.parametrize(
    ("phases", "checks", "field"),
    [
        ([], [], "phases"),
        ([{"percentage": 120}], [], "phases[0].percentage"),
        ([{"percentage": "ten"}], [], "phases[0].percentage"),
        ([{"percentage": 50}, {"percentage": 10}], [], "phases[1].percentage"),
        (
            [{"target_type": "pilot", "pilot_merchants": []}],
            [],
            "phases[0].pilot_merchants",
        ),
        ([{"pilot_merchants": ["nobody"]}], [], "phases[0].pilot_merchants"),
        (
            [{"percentage": 10, "min_duration": 60, "max_duration": 30}],
            [],
            "phases[0].max_duration",
        ),
        ([{"percentage": 10, "colour": "red"}], [], "phases[0].colour"),
        ([{"target_type": "moon"}], [], "phases[0].target_type"),
        (
            [{"percentage": 10}],
            [{"provider": "prometheus", "threshold": 1}],
            "checks[0].name",
        ),
        (
            [{"percentage": 10}],
            [{"name": "a", "provider": "ftp", "threshold": 1}],
            "checks[0].provider",
        ),
        (
            [{"percentage": 10}],
            [{"name": "a", "provider": "prometheus", "spec": {"query": "up"}}],
            "checks[0].threshold",
        ),
        (
            [{"percentage": 10}],
            [{"name": "a", "provider": "prometheus", "spec": {}, "threshold": 1}],
            "checks[0].spec.query",
        ),
        (
            [{"percentage": 10}],
            [
                {
                    "name": "a",
                    "provider": "prometheus",
                    "threshold": 1,
                    "spec": {"query": "up"},
                    "failure_limit": -1,
                }
            ],
            "checks[0].failure_limit",
        ),
        (
            [{"percentage": 10}],
            [
                {
                    "name": "a",
                    "provider": "prometheus",
                    "threshold": 1,
                    "spec": {"query": "up"},
                    "min_samples": 0,
                }
            ],
            "checks[0].min_samples",
        ),
        (
            [{"percentage": 10}],
            [
                {
                    "name": "a",
                    "provider": "prometheus",
                    "threshold": 1,
                    "spec": {"query": "up"},
                    "on_failure": "rollback_2",
                }
            ],
            "checks[0].on_failure",
        ),
        (
            [{"percentage": 10}],
            [
                {
                    "name": "a",
                    "provider": "prometheus",
                    "threshold": 1,
                    "spec": {"query": "up"},
                    "mode": "cohort",
                }
            ],
            "checks[0].mode",
        ),
    ],
)
def test_rollout_create__bad_input__field_level_error_nothing_written(
    flag, production, merchants, phases, checks, field
):
    # Given
    events_before = AuditEvent.objects.count()
    # When
    with pytest.raises(InvalidInput) as caught:
        services.rollout_create(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            name="x",
            phases=phases,
            checks=checks,
        )
    # Then
    assert caught.value.field == field
    assert caught.value.message.startswith(field)
    assert Rollout.objects.count() == 0
    assert AuditEvent.objects.count() == events_before


def test_rollout_create__another_rollout_running__conflict(
    rollout_factory, flag, production
):
    # Given
    rollout_factory(Status.RUNNING)
    # When
    with pytest.raises(RolloutAlreadyActive) as caught:
        services.rollout_create(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            name="second",
            phases=[{"percentage": 10}],
        )
    # Then
    assert caught.value.http_status == 409


def test_rollout_create__non_bool_flag_without_treatment__field_error(
    production, flag_factory
):
    # Given
    theme = flag_factory(
        "checkout_theme",
        value_type="string",
        variations=[
            {"key": "classic", "value": "classic"},
            {"key": "dark", "value": "dark"},
        ],
    )
    # When
    with pytest.raises(InvalidInput) as caught:
        services.rollout_create(
            actor=SYSTEM,
            flag=theme,
            environment=production,
            name="x",
            phases=[{"percentage": 10}],
        )
    # Then
    assert caught.value.field == "treatment"


def test_rollout_create_from_template__pilot_plan__four_phases_scaled(
    flag, production, merchants
):
    # When
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="pilot-10-50-100",
        flag=flag,
        environment=production,
        pilot_merchants=["m-pilot"],
        checks=[],
        duration_scale=0.01,
        phase_overrides={"50%": {"requires_approval": True}},
    )
    # Then
    phases = list(
        rollout.phases.values_list(
            "name", "percentage", "min_duration", "requires_approval"
        )
    )
    assert phases == [
        ("pilot", None, 6, False),
        ("10%", 10.0, 9, False),
        ("50%", 50.0, 18, True),
        ("100%", 100.0, 6, False),
    ]
    assert rollout.phases.get(index=0).pilot_merchants == ["m-pilot"]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"template": "yolo"}, "template"),
        ({"template": "pilot-10-50-100"}, "phases[0].pilot_merchants"),
        (
            {
                "template": "pilot-10-50-100",
                "pilot_merchants": ["m-pilot"],
                "phase_overrides": {"75%": {}},
            },
            "phase_overrides.75%",
        ),
    ],
)
def test_rollout_create_from_template__bad_input__field_error(
    flag, production, merchants, kwargs, field
):
    # When
    with pytest.raises(InvalidInput) as caught:
        services.rollout_create_from_template(
            actor=SYSTEM, flag=flag, environment=production, **kwargs
        )
    # Then
    assert caught.value.field == field


# start, advance, complete -------------------------------------------------


def test_rollout_start__disabled_flag__captures_state_and_pilot_gets_treatment(
    rollout_factory, production, flag
):
    # Given
    rollout = rollout_factory(Status.DRAFT)
    before = FlagState.objects.get(flag=flag, environment=production)
    # When
    rollout = services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    assert rollout.status == Status.RUNNING
    assert rollout.captured_state["enabled"] is False
    assert rollout.captured_state["version"] == before.version
    assert rollout.captured_state["pilot_overrides"] == {"m-pilot": None}
    answers = _answers(
        production, flag.key, ["m-pilot", "merchant-0001", "merchant-0002"]
    )
    assert answers == {"m-pilot": True, "merchant-0001": False, "merchant-0002": False}
    assert HealthCheck.objects.get(rollout=rollout).next_due_at is not None


def test_rollout_advance__through_all_phases__percentages_live_then_completed(
    rollout_factory, production, flag
):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    shares = []
    # When
    for index in range(4):
        _pass_all_checks(rollout)
        assert services.rollout_gate(rollout=rollout).action == GateAction.ADVANCE
        rollout = services.rollout_advance(
            rollout_id=rollout.pk,
            expected_phase=index,
            actor=CONTROLLER,
            reason="gate open",
        )
        shares.append(_share_on(production, flag.key))
    # Then
    assert rollout.status == Status.COMPLETED
    assert shares[0] == pytest.approx(0.10, abs=0.03)
    assert shares[1] == pytest.approx(0.50, abs=0.04)
    assert shares[2:] == [1.0, 1.0]
    assert _events(rollout, "rollout.phase_advanced").count() == 3
    completed = _events(rollout, "rollout.completed").get()
    summary = completed.details["checks"]["error_rate"]
    assert summary["verdicts"]["pass"] == 4
    assert summary["threshold"] == 0.01
    assert summary["values"]["count"] == 4
    # pilot overrides are cleaned up once everyone is on the treatment
    assert not MerchantOverride.objects.filter(flag=flag).exists()
    assert audit_chain_verify().ok


def test_rollout_advance__redelivered__applies_once(rollout_factory, production, flag):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    # When
    for _ in range(3):
        services.rollout_advance(
            rollout_id=rollout.pk,
            expected_phase=0,
            actor=CONTROLLER,
            reason="gate open",
        )
    # Then
    rollout.refresh_from_db()
    assert rollout.current_phase == 1
    assert _events(rollout, "rollout.phase_advanced").count() == 1
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1


def test_rollout_advance__last_phase_redelivered__one_completed_event(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING, phases=[{"percentage": 100}])
    # When
    for _ in range(2):
        services.rollout_advance(
            rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason="done"
        )
    # Then
    assert _events(rollout, "rollout.completed").count() == 1
    assert (
        _events(rollout, "rollout.transition")
        .filter(after={"status": "completed"})
        .count()
        == 1
    )


def test_rollout_advance__paused__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.PAUSED)
    # When
    with pytest.raises(RolloutInvalidTransition):
        services.rollout_advance(
            rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
        )
    # Then
    rollout.refresh_from_db()
    assert rollout.current_phase == 0


def test_rollout_advance__new_phase__check_counters_reset(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    _pass_all_checks(rollout)
    # When
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
    )
    # Then
    check = rollout.checks.get()
    assert (check.status, check.pass_count, check.state_phase) == ("pending", 0, 1)
    rollout.refresh_from_db()
    decision = services.rollout_gate(rollout=rollout)
    assert decision.action == GateAction.HOLD
    assert "0 of 1 passing samples" in decision.reasons[0]


# approval -----------------------------------------------------------------

APPROVAL_PHASES = [{"percentage": 10, "requires_approval": True}, {"percentage": 100}]


def test_rollout_gate__approval_required__await_then_advance_after_approve(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(Status.RUNNING, phases=APPROVAL_PHASES)
    _pass_all_checks(rollout)
    # When
    decision = services.rollout_gate(rollout=rollout)
    with pytest.raises(Conflict):
        services.rollout_advance(
            rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
        )
    services.rollout_transition(
        rollout_id=rollout.pk,
        to=Status.AWAITING_APPROVAL,
        actor=CONTROLLER,
        reason=decision.reasons[0],
    )
    approved = services.rollout_approve(
        rollout_id=rollout.pk, actor=SYSTEM, reason="looks good"
    )
    after = services.rollout_gate(rollout=approved)
    advanced = services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason="approved"
    )
    # Then
    assert decision.action == GateAction.AWAIT_APPROVAL
    assert (approved.status, approved.approved_phase) == (Status.RUNNING, 0)
    assert after.action == GateAction.ADVANCE
    assert advanced.current_phase == 1
    approval = _events(rollout, "rollout.approved").get()
    assert approval.details == {"reason": "looks good", "phase": 0}


def test_rollout_approve__redelivered__one_approval_event(rollout_factory):
    # Given
    rollout = rollout_factory(Status.AWAITING_APPROVAL, phases=APPROVAL_PHASES)
    # When
    for _ in range(2):
        services.rollout_approve(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    assert _events(rollout, "rollout.approved").count() == 1
    assert (
        _events(rollout, "rollout.transition")
        .filter(after={"status": "running"})
        .count()
        == 2
    )


def test_rollout_approve__for_an_earlier_phase__ignored(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
    )
    # When
    result = services.rollout_approve(
        rollout_id=rollout.pk, actor=SYSTEM, expected_phase=0
    )
    # Then
    assert result.approved_phase is None
    assert not _events(rollout, "rollout.approved").exists()


def test_rollout_approve__completed__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.COMPLETED)
    # When / Then
    with pytest.raises(RolloutInvalidTransition):
        services.rollout_approve(rollout_id=rollout.pk, actor=SYSTEM)


# pause / resume -------------------------------------------------------------


def test_rollout_pause_resume__paused_then_resumed__counters_reset_and_audited(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    check = rollout.checks.get()
    services.check_run_record(
        check_id=check.pk, phase_index=0, value=None, verdict="inconclusive", detail={}
    )
    # When
    paused = services.rollout_pause(
        rollout_id=rollout.pk, actor=SYSTEM, reason="incident"
    )
    resumed = services.rollout_resume(
        rollout_id=rollout.pk, actor=SYSTEM, reason="fixed"
    )
    again = services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM, reason="fixed")
    # Then
    assert (paused.status, paused.pause_reason) == (Status.PAUSED, "incident")
    assert (resumed.status, resumed.pause_reason) == (Status.RUNNING, "")
    assert again.version == resumed.version
    check.refresh_from_db()
    assert (check.inconclusive_count, check.status) == (0, "pending")
    moves = list(
        _events(rollout, "rollout.transition")
        .order_by("id")
        .values_list("details__reason", flat=True)
    )
    assert moves[-2:] == ["incident", "fixed"]


def test_rollout_resume__not_paused__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.AWAITING_APPROVAL)
    # When / Then
    with pytest.raises(RolloutInvalidTransition):
        services.rollout_resume(rollout_id=rollout.pk, actor=SYSTEM)


# abort restores the captured state ----------------------------------------


def test_rollout_abort__at_fifty_percent__flag_serves_exactly_as_before(
    rollout_factory, production, flag, merchants, actor
):
    # Given: the flag was on for 5% with a rule-free split, m-pilot-2 pinned off
    flag_services.flag_state_set_enabled(
        actor=actor, flag=flag, environment=production, enabled=True
    )
    flag_services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=production, percentage=5
    )
    flag_services.override_set(
        actor=actor,
        flag=flag,
        environment=production,
        merchant=merchants["m-pilot-2"],
        variation="off",
        note="vip",
    )
    keys = ["m-pilot", "m-pilot-2", *SAMPLE]
    before = _answers(production, flag.key, keys)
    rollout = rollout_factory(
        Status.RUNNING,
        phases=[{"pilot_merchants": ["m-pilot", "m-pilot-2"]}, {"percentage": 50}],
    )
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
    )
    during = _answers(production, flag.key, keys)
    # When
    aborted = services.rollout_abort(
        rollout_id=rollout.pk, actor=actor, reason="wrong flag"
    )
    # Then
    after = _answers(production, flag.key, keys)
    assert during != before and during["m-pilot-2"] is True
    assert after == before
    assert aborted.status == Status.ABORTED and aborted.finished_at is not None
    override = MerchantOverride.objects.get(flag=flag, merchant__key="m-pilot-2")
    assert (override.variation, override.note) == ("off", "vip")
    assert not MerchantOverride.objects.filter(
        flag=flag, merchant__key="m-pilot"
    ).exists()
    event = (
        _events(rollout, "rollout.transition").filter(after={"status": "aborted"}).get()
    )
    assert event.details["restored"] is True and event.actor_name == "alice"
    assert AuditEvent.objects.filter(action="flag_state.restored_snapshot").count() == 1


def test_rollout_abort__draft__aborted_without_touching_the_flag(
    rollout_factory, flag, production
):
    # Given
    rollout = rollout_factory(Status.DRAFT)
    version = FlagState.objects.get(flag=flag, environment=production).version
    # When
    services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="not needed")
    services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="not needed")
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.ABORTED
    assert FlagState.objects.get(flag=flag, environment=production).version == version
    assert _events(rollout, "rollout.transition").count() == 1


def test_rollout_abort__completed__refused(rollout_factory):
    # Given
    rollout = rollout_factory(Status.COMPLETED)
    # When / Then
    with pytest.raises(RolloutInvalidTransition):
        services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="")


# failing a phase, rolling back ----------------------------------------------


def test_rollout_fail_phase__pause_on_failure__paused_with_reason(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    # When
    result = services.rollout_fail_phase(
        rollout_id=rollout.pk, actor=SYSTEM, reason="dashboards red", on_failure="pause"
    )
    # Then
    assert (result.status, result.pause_reason) == (Status.PAUSED, "dashboards red")
    failed = _events(rollout, "rollout.phase_failed").get()
    assert failed.details["on_failure"] == "pause"


def test_rollout_begin_rollback__level_1__run_started_pilots_removed(
    rollout_factory, production, flag, django_capture_on_commit_callbacks
):
    # Given
    from rollback.models import RollbackRun

    rollout = rollout_factory(Status.RUNNING)
    # When
    with django_capture_on_commit_callbacks() as callbacks:
        result = services.rollout_begin_rollback(
            rollout_id=rollout.pk, level=1, actor=CONTROLLER, reason="error rate"
        )
        services.rollout_begin_rollback(
            rollout_id=rollout.pk, level=1, actor=CONTROLLER, reason="error rate"
        )
    # Then
    assert result.status == Status.ROLLING_BACK
    run = RollbackRun.objects.get()
    assert (run.trigger, run.trigger_ref, run.level) == ("rollout", str(rollout.pk), 1)
    assert len(callbacks) >= 1
    assert not MerchantOverride.objects.filter(flag=flag).exists()
    started = _events(rollout, "rollout.rollback_started").get()
    assert started.details["rollback_run"] == run.pk


def test_rollout_begin_rollback__run_executed__flag_back_then_rolled_back(
    rollout_factory, production, flag, django_capture_on_commit_callbacks
):
    # Given
    keys = ["m-pilot", *SAMPLE[:300]]
    before = _answers(production, flag.key, keys)
    rollout = rollout_factory(Status.RUNNING)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
    )
    # When: the queued run executes (Celery eager in tests)
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_fail_phase(
            rollout_id=rollout.pk, actor=CONTROLLER, reason="check error_rate failed"
        )
    finished = services.rollout_rollback_finished(
        rollout_id=rollout.pk, actor=CONTROLLER, succeeded=True
    )
    # Then
    from rollback.models import RollbackRun

    assert RollbackRun.objects.get().status == "succeeded"
    assert _answers(production, flag.key, keys) == before
    assert finished.status == Status.ROLLED_BACK


def test_rollout_rollback_finished__failed_run__stays_rolling_back_with_event(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(Status.ROLLING_BACK)
    # When
    result = services.rollout_rollback_finished(
        rollout_id=rollout.pk, actor=CONTROLLER, succeeded=False, reason="webhook 500"
    )
    # Then
    assert result.status == Status.ROLLING_BACK
    assert (
        _events(rollout, "rollout.rollback_failed").get().details["reason"]
        == "webhook 500"
    )


def test_check_failure__while_awaiting_approval__gate_fails_and_rollback_begins(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(Status.AWAITING_APPROVAL, phases=APPROVAL_PHASES)
    check = rollout.checks.get()
    # When
    _, outcome = services.check_run_record(
        check_id=check.pk,
        phase_index=0,
        value=0.2,
        verdict="fail",
        detail={"message": "0.2 not < 0.01"},
    )
    rollout.refresh_from_db()
    decision = services.rollout_gate(rollout=rollout)
    result = services.rollout_fail_phase(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        reason="; ".join(decision.reasons),
        on_failure=decision.on_failure,
    )
    # Then
    assert outcome.crossed == CheckStatus.FAILED
    assert (decision.action, decision.on_failure) == (GateAction.FAIL, "rollback_1")
    assert result.status == Status.ROLLING_BACK


# check runs -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure_limit", "verdicts", "failed_at"),
    [
        (0, ["fail"], 1),
        (2, ["fail", "fail", "fail"], 3),
        (2, ["fail", "pass", "fail", "fail"], None),
    ],
)
def test_check_run_record__failure_limit__fails_when_exceeded(
    rollout_factory, failure_limit, verdicts, failed_at
):
    # Given
    checks = [{**DEFAULT_CHECK, "failure_limit": failure_limit}]
    rollout = rollout_factory(Status.RUNNING, checks=checks)
    check = rollout.checks.get()
    # When
    crossed = []
    for verdict in verdicts:
        _, outcome = services.check_run_record(
            check_id=check.pk, phase_index=0, value=1.0, verdict=verdict, detail={}
        )
        crossed.append(outcome.crossed)
    # Then
    check.refresh_from_db()
    assert CheckRun.objects.filter(health_check=check).count() == len(verdicts)
    failed_events = AuditEvent.objects.filter(
        action="check.failed", target_id=str(check.pk)
    )
    if failed_at is None:
        assert check.status != "failed" and not failed_events.exists()
    else:
        assert crossed.index("failed") == failed_at - 1
        assert check.status == "failed"
        event = failed_events.get()
        assert event.details["limits"]["failure_limit"] == failure_limit
        assert "exceed the failure limit" in event.details["explanation"]


DEFAULT_CHECK = {
    "name": "error_rate",
    "provider": "prometheus",
    "spec": {"query": "up"},
    "comparator": "lt",
    "threshold": 0.01,
}


def test_check_run_record__errors_past_limit__errored_retried_sooner_then_pause(
    rollout_factory,
):
    # Given
    checks = [{**DEFAULT_CHECK, "consecutive_error_limit": 2, "interval": 60}]
    rollout = rollout_factory(Status.RUNNING, checks=checks)
    check = rollout.checks.get()
    now = timezone.now()
    # When
    outcomes = [
        services.check_run_record(
            check_id=check.pk,
            phase_index=0,
            value=None,
            verdict="error",
            detail={"error": "connection refused"},
            measured_at=now,
        )[1]
        for _ in range(3)
    ]
    # Then
    check.refresh_from_db()
    assert [o.crossed for o in outcomes] == [None, None, "errored"]
    assert [o.next_delay for o in outcomes] == [15.0, 30.0, 60.0]
    assert check.next_due_at == now + dt.timedelta(seconds=60)
    rollout.refresh_from_db()
    decision = services.rollout_gate(rollout=rollout)
    assert decision.action == GateAction.PAUSE
    assert AuditEvent.objects.filter(action="check.errored").count() == 1


def test_check_run_record__stale_phase__kept_but_counters_untouched(rollout_factory):
    # Given
    rollout = rollout_factory(Status.RUNNING)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=CONTROLLER, reason=""
    )
    check = rollout.checks.get()
    # When
    run, outcome = services.check_run_record(
        check_id=check.pk, phase_index=0, value=5.0, verdict="fail", detail={}
    )
    # Then
    check.refresh_from_db()
    assert run.pk is not None and run.phase_index == 0
    assert outcome.crossed is None
    assert (check.status, check.consecutive_failures) == ("pending", 0)


def test_check_judge__no_data_fail_check__recorded_as_failure(rollout_factory):
    # Given
    checks = [{**DEFAULT_CHECK, "no_data": "fail"}]
    rollout = rollout_factory(Status.RUNNING, checks=checks)
    check = rollout.checks.get()
    # When
    judgement, detail = services.check_judge(check, value=None, samples=0)
    _, outcome = services.check_run_record(
        check_id=check.pk,
        phase_index=0,
        value=None,
        verdict=judgement.verdict,
        detail=detail,
    )
    # Then
    assert judgement.verdict == "fail"
    assert outcome.crossed == "failed"
    assert detail["threshold"] == 0.01 and "no data" in detail["message"]


def test_check_judge__relative_mode__compares_with_rollout_baseline(rollout_factory):
    # Given
    checks = [
        {
            "name": "p95",
            "provider": "prometheus",
            "spec": {"query": "up"},
            "comparator": "lt",
            "mode": "relative",
            "relative_tolerance": 0.2,
        }
    ]
    rollout = rollout_factory(Status.DRAFT, checks=checks)
    services.rollout_set_baseline(
        rollout_id=rollout.pk, actor=SYSTEM, baseline={"p95": 100.0}
    )
    check = HealthCheck.objects.get(rollout=rollout)
    # When
    ok, _ = services.check_judge(check, value=119.0)
    bad, detail = services.check_judge(check, value=121.0)
    # Then
    assert (ok.verdict, bad.verdict) == ("pass", "fail")
    assert detail["baseline"] == 100.0 and detail["limit"] == pytest.approx(120.0)


def test_check_judge__cohort_mode__treatment_much_worse__fail_with_stats(
    rollout_factory,
):
    # Given
    checks = [
        {
            "name": "errors",
            "provider": "outcomes",
            "spec": {"metric": "error_rate"},
            "mode": "cohort",
            "relative_tolerance": 0.1,
        }
    ]
    rollout = rollout_factory(Status.RUNNING, checks=checks)
    check = rollout.checks.get()
    cohorts = {
        "treatment": {"n": 400, "failures": 32},
        "control": {"n": 4000, "failures": 40},
    }
    # When
    judgement, detail = services.check_judge(
        check, value=0.08, samples=400, cohorts=cohorts
    )
    # Then
    assert judgement.verdict == "fail"
    assert detail["cohort"]["p_value"] < 0.05
    assert detail["cohort"]["test"].startswith("two-proportion")


def test_rollout_gate__fewer_than_min_samples__holds(rollout_factory):
    # Given
    checks = [{**DEFAULT_CHECK, "min_samples": 3}]
    rollout = rollout_factory(Status.RUNNING, checks=checks)
    check = rollout.checks.get()
    for _ in range(2):
        services.check_run_record(
            check_id=check.pk, phase_index=0, value=0.0, verdict="pass", detail={}
        )
    rollout.refresh_from_db()
    # When
    decision = services.rollout_gate(rollout=rollout)
    # Then
    assert decision.action == GateAction.HOLD
    assert decision.reasons == ("check error_rate: 2 of 3 passing samples",)


def test_rollout_fail_phase__level_2_without_deployment__flag_rollback_only(
    rollout_factory,
):
    # Given
    from rollback.models import RollbackRun

    rollout = rollout_factory(Status.RUNNING)
    # When
    result = services.rollout_fail_phase(
        rollout_id=rollout.pk, actor=SYSTEM, reason="operator", on_failure="rollback_2"
    )
    # Then
    assert result.status == Status.ROLLING_BACK
    assert RollbackRun.objects.get().level == 1
    started = _events(rollout, "rollout.rollback_started").get()
    assert (started.details["requested_level"], started.details["level"]) == (2, 1)


def test_rollout_start__staging_internal_plan__internal_merchants_get_treatment(
    environments, flag, merchants
):
    # Given
    staging = environments["staging"]
    rollout = services.rollout_create_from_template(
        actor=SYSTEM,
        template="staging-then-production",
        flag=flag,
        environment=staging,
        pilot_merchants=["m-pilot", "m-pilot-2"],
        checks=[],
    )
    # When
    services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    answers = _answers(staging, flag.key, ["m-pilot", "m-pilot-2", "merchant-0001"])
    assert answers == {"m-pilot": True, "m-pilot-2": True, "merchant-0001": False}
    assert _answers(environments["production"], flag.key, ["m-pilot"]) == {
        "m-pilot": False
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"margin": -0.01}, "checks[0].margin"),
        ({"margin": 1.5}, "checks[0].margin"),
        ({"alpha": 0.7}, "checks[0].alpha"),
        ({"alpha": 0}, "checks[0].alpha"),
        ({"dry_run": "yes"}, "checks[0].dry_run"),
        ({"threshold": 0.05}, "checks[0].threshold"),
        ({"provider": "http", "spec": {"url": "http://x/"}}, "checks[0].mode"),
        ({"spec": {"metric": "p999_ms"}}, "checks[0].spec.metric"),
    ],
)
def test_checks_clean__bad_compare_check__field_error(change, field):
    # Given
    from canary.exceptions import InvalidInput
    from canary.services import checks_clean

    check = {
        "name": "errors",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "error_rate"},
        **change,
    }
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        checks_clean([check])
    assert raised.value.field == field


def test_phases_clean__unknown_gate__field_error(db):
    from canary.exceptions import InvalidInput
    from canary.services import phases_clean

    with pytest.raises(InvalidInput) as raised:
        phases_clean([{"percentage": 10, "gate": "maybe"}])
    assert raised.value.field == "phases[0].gate"
