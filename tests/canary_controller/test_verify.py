"""After a rollback: the verification window and automatic escalation.

The window's answers are recorded as check runs through
``check_run_record`` (what the controller's record step writes), the
decision step runs for real (``canary.controller.decide``), and the
deployment revert is real: the symlink backend switches ``current``
between release directories, the rollback runs execute on commit through
the eager Celery task.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from canary import clock, services
from canary.controller.claim import claim_due
from canary.controller.decide import decide
from canary.exceptions import Conflict
from canary.models import Rollout, RolloutStatus, VerificationState
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.conf import setting
from rollback.models import Deployment, RollbackRun

Status = RolloutStatus
State = VerificationState
START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)

COMPARE_CHECKS = [
    {
        "name": "errors",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "error_rate"},
        "interval": 30,
        "on_failure": "rollback_1",
    },
    {
        "name": "p95",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "p95_ms"},
        "interval": 30,
        "on_failure": "rollback_1",
    },
]


def comparison(answer: str, estimate: float = 0.021) -> dict:
    """A comparison as canary.sequential.Comparison.as_dict() gives it."""
    lower, upper = (
        (estimate - 0.009, estimate + 0.009)
        if answer != "not_worse"
        else (-0.004, 0.003)
    )
    return {
        "metric": "error_rate",
        "decision": answer,
        "rule": f"{answer}: interval vs margin",
        "estimate": estimate if answer != "not_worse" else -0.0005,
        "lower": lower,
        "upper": upper,
        "margin": 0.005,
        "alpha": 0.05,
        "treated_merchants": 3,
        "control_merchants": 40,
        "treated_events": 1800,
        "control_events": 24000,
        "drift_correction": 0.001,
        "more_events": 1.0,
        "explanation": "treated vs own baselines",
    }


@pytest.fixture
def fake_clock():
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        yield fake


@pytest.fixture
def releases(tmp_path, settings) -> Path:
    root = tmp_path / "shop"
    for version in ("v1", "v2"):
        (root / "releases" / version).mkdir(parents=True)
    os.symlink("releases/v2", root / "current")
    settings.CONTROLPLANE = {
        **(settings.CONTROLPLANE or {}),
        "ROLLBACK_DEPLOY_BACKENDS": {"default": {"type": "symlink", "root": str(root)}},
    }
    return root


@pytest.fixture
def deployment(production, releases) -> Deployment:
    """shop v2 live in production, v1 its previous deployment."""
    from rollback.services import deployment_record

    for version in ("v1", "v2"):
        live = deployment_record(
            actor=SYSTEM,
            service="shop",
            environment=production,
            version=version,
            artifact=f"img:{version}",
            migration_state={},
        )
    return live


@pytest.fixture
def rolled_back(
    rollout_factory, deployment, fake_clock, django_capture_on_commit_callbacks
):
    """Return make(**kwargs): a rollout of ``deployment`` with the compare
    checks, failed in phase 0 and rolled back at level 1 (run executed,
    the controller marked it rolled back)."""

    def make(*, with_deployment: bool = True, **kwargs) -> Rollout:
        kwargs.setdefault("checks", COMPARE_CHECKS)
        if with_deployment:
            kwargs["deployment"] = deployment.pk
        rollout = rollout_factory(**kwargs)
        with django_capture_on_commit_callbacks(execute=True):
            services.rollout_fail_phase(
                rollout_id=rollout.pk,
                actor=SYSTEM,
                reason="errors worse",
                on_failure="rollback_1",
            )
        with django_capture_on_commit_callbacks(execute=True):
            decide(rollout.pk)
        rollout.refresh_from_db()
        assert rollout.status == Status.ROLLED_BACK
        return rollout

    return make


def answer(rollout: Rollout, check: str, value: str, **extra) -> None:
    """Record one answer of ``check`` in the rollout's open window."""
    rollout.refresh_from_db()
    row = rollout.checks.get(name=check)
    verdict = {"worse": "fail", "not_worse": "pass", "not_yet": "not_yet"}[value]
    services.check_run_record(
        check_id=row.pk,
        phase_index=rollout.verification["phase"],
        value=0.03,
        verdict=verdict,
        detail={
            "answer": value,
            "comparison": comparison(value),
            "note": "",
            "verification": {
                "since": rollout.verification["since"],
                "level": rollout.verification["level"],
                "run": rollout.verification["rollback_run"],
            },
            **extra,
        },
    )


def events(rollout: Rollout, action: str):
    return AuditEvent.objects.filter(
        target_type="canary.rollout", target_id=str(rollout.pk), action=action
    ).order_by("id")


def tick(rollout: Rollout, capture) -> dict | None:
    with capture(execute=True):
        result = decide(rollout.pk)
    rollout.refresh_from_db()
    return result


# -- opening the window --------------------------------------------------------


def test_rollback_finished__compare_checks__window_opens_on_treated_merchants(
    rolled_back, fake_clock
):
    # When
    rollout = rolled_back()
    # Then
    v = rollout.verification
    assert rollout.verification_state == State.VERIFYING
    assert v["level"] == 1 and v["phase"] == 0
    assert v["merchants"] == ["m-pilot"]
    assert v["rollback_run"] == RollbackRun.objects.get().pk
    since = dt.datetime.fromisoformat(v["since"])
    assert dt.datetime.fromisoformat(v["until"]) - since == dt.timedelta(
        seconds=setting("CANARY_VERIFY_SECONDS")
    )
    started = events(rollout, "rollout.verification_started").get()
    assert started.details["checks"] == ["errors", "p95"]
    assert started.details["merchants"] == 1 and started.details["level"] == 1
    assert (
        events(rollout, "rollout.rollback_started").get().details["treated_merchants"]
        == 1
    )
    # the compare checks are due at once
    assert all(c.next_due_at == since for c in rollout.checks.all())


def test_rollback_finished__treated_by_events__their_merchants_captured(
    rollout_factory, deployment, fake_clock, django_capture_on_commit_callbacks
):
    # Given: events with the treatment variation from two merchants
    from canary.services.outcomes import outcome_events_ingest

    rollout = rollout_factory(checks=COMPARE_CHECKS, deployment=deployment.pk)
    outcome_events_ingest(
        events=[
            {
                "flag": rollout.flag.key,
                "merchant": key,
                "variation": variation,
                "outcome": "success",
            }
            for key, variation in (
                ("m-a", rollout.treatment_variation),
                ("m-b", rollout.treatment_variation),
                ("m-c", rollout.control_variation),
            )
        ],
        environment=rollout.environment,
    )
    # When
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_rollback(
            rollout_id=rollout.pk, level=1, actor=SYSTEM, reason="x"
        )
    # Then
    rollout.refresh_from_db()
    assert rollout.verification["merchants"] == ["m-a", "m-b", "m-pilot"]


def test_rollback_finished__setting_zero__no_window(rolled_back, settings):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "CANARY_VERIFY_SECONDS": 0}
    # When
    rollout = rolled_back()
    # Then
    assert rollout.verification_state == State.NONE
    assert not events(rollout, "rollout.verification_started").exists()


def test_rollback_finished__no_compare_check__no_window(rolled_back):
    # Given: a threshold check only, and a dry-run compare check
    checks = [
        {
            "name": "errors",
            "provider": "outcomes",
            "spec": {"metric": "error_rate"},
            "threshold": 0.05,
        },
        {**COMPARE_CHECKS[1], "dry_run": True},
    ]
    # When
    rollout = rolled_back(checks=checks)
    # Then
    assert rollout.verification_state == State.NONE
    assert rollout.verification["merchants"] == ["m-pilot"]


# -- deciding ------------------------------------------------------------------


def test_decide__worse_after_level_1__escalates_to_level_2_then_verifies_again(
    rolled_back, releases, deployment, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    first_since = rollout.verification["since"]
    answer(rollout, "errors", "worse")
    answer(rollout, "p95", "not_yet")
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then: level 2 ran (the deployment is reverted) and is explained
    run = RollbackRun.objects.latest("id")
    assert (run.level, run.status) == (2, "succeeded")
    assert os.readlink(releases / "current") == "releases/v1"
    assert result["action"] == "verify:escalating" and result["level"] == 2
    escalated = events(rollout, "rollout.rollback_escalated").get()
    assert escalated.actor_name == "controller"
    assert escalated.details["from_level"] == 1 and escalated.details["level"] == 2
    reason = escalated.details["reason"]
    assert "automatic escalation to level 2 (deployment revert)" in reason
    assert "check errors worse: +2.10 pp [+1.20 pp, +3.00 pp] above margin 0.50 pp" in (
        reason
    )
    assert "(3 merchants, 1800 events)" in reason
    errors = next(c for c in escalated.details["checks"] if c["check"] == "errors")
    assert errors["estimate"] == 0.021 and errors["margin"] == 0.005
    assert errors["lower"] == pytest.approx(0.012)
    assert errors["evidence"] == {
        "merchants": 3,
        "events": 1800,
        "control_merchants": 40,
        "control_events": 24000,
    }
    assert errors["rule"] == "worse: interval vs margin"
    assert escalated.details["verification"]["from"] == "verifying"
    # Then: the tick queued on commit followed the succeeded run: a new
    # window at level 2, where the level-1 answers no longer count
    assert rollout.verification_state == State.VERIFYING
    assert rollout.verification["level"] == 2
    assert rollout.verification["rollback_run"] == run.pk
    assert rollout.verification["since"] == first_since  # the clock did not move
    assert [(h["level"], h["state"]) for h in rollout.verification["history"]] == [
        (1, "verifying"),
        (1, "escalating"),
        (2, "verifying"),
    ]
    assert events(rollout, "rollout.verification_started").count() == 2
    assert tick(rollout, django_capture_on_commit_callbacks) is None


def test_decide__still_worse_at_level_2__escalates_to_level_3(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given: escalated to 2
    rollout = rolled_back()
    answer(rollout, "errors", "worse")
    tick(rollout, django_capture_on_commit_callbacks)
    assert rollout.verification["level"] == 2
    # When
    answer(rollout, "p95", "worse")
    tick(rollout, django_capture_on_commit_callbacks)
    # Then
    run = RollbackRun.objects.latest("id")
    assert (run.level, run.status) == (3, "succeeded")
    assert rollout.verification_state == State.VERIFYING
    assert rollout.verification["level"] == 3
    assert [
        e.details["level"] for e in events(rollout, "rollout.rollback_escalated")
    ] == [
        2,
        3,
    ]


def test_decide__worse_at_max_level__exhausted_and_operator_told(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back(max_level=1)
    answer(rollout, "errors", "worse")
    runs = RollbackRun.objects.count()
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert result["action"] == "verify:exhausted"
    assert rollout.verification_state == State.EXHAUSTED
    assert RollbackRun.objects.count() == runs
    event = events(rollout, "rollout.verification_exhausted").get()
    assert "level 2 is above the rollout's max_level 1" in event.details["reason"]
    assert event.details["checks"][0]["answer"] == "worse"
    assert "still worse than their own baselines" in rollout.verification["reason"]


def test_decide__worse_without_deployment__exhausted_names_the_deployment(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back(with_deployment=False)
    answer(rollout, "errors", "worse")
    # When
    tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert rollout.verification_state == State.EXHAUSTED
    assert "the rollout has none recorded" in rollout.verification["reason"]


def test_decide__preflight_refuses_level_2__exhausted_with_the_refusal(
    rolled_back, django_capture_on_commit_callbacks, settings
):
    # Given: the deploy backend was removed since the rollout started
    rollout = rolled_back()
    answer(rollout, "errors", "worse")
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "ROLLBACK_DEPLOY_BACKENDS": {}}
    runs = RollbackRun.objects.count()
    # When
    tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert rollout.verification_state == State.EXHAUSTED
    assert RollbackRun.objects.count() == runs
    assert not events(rollout, "rollout.rollback_escalated").exists()
    assert (
        "but level 2 was refused: rollback impossible: level 2: no deploy backend"
        in (rollout.verification["reason"])
    )


def test_decide__every_check_not_worse__recovered(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    answer(rollout, "errors", "not_worse")
    answer(rollout, "p95", "not_worse")
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert result["action"] == "verify:recovered"
    assert rollout.verification_state == State.RECOVERED
    event = events(rollout, "rollout.verified").get()
    assert event.details["level"] == 1
    assert {c["check"] for c in event.details["checks"]} == {"errors", "p95"}
    assert (
        "recovered after the level 1 (flag restore) rollback"
        in (event.details["reason"])
    )
    assert RollbackRun.objects.count() == 1
    # a closed window is not claimed any more
    assert claim_due(rollout_id=rollout.pk, now=clock.now()) == ([], [])


def test_decide__one_not_worse_one_not_yet__waits_then_ends_without_harm(
    rolled_back, django_capture_on_commit_callbacks, fake_clock
):
    # Given
    rollout = rolled_back()
    answer(rollout, "errors", "not_worse")
    answer(rollout, "p95", "not_yet")
    # When / Then: waits while the window is open
    assert tick(rollout, django_capture_on_commit_callbacks) is None
    assert rollout.verification_state == State.VERIFYING
    # When: the window ends
    fake_clock.advance(setting("CANARY_VERIFY_SECONDS"))
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert result["action"] == "verify:ended"
    event = events(rollout, "rollout.verification_ended").get()
    assert "ended without evidence of harm" in event.details["reason"]
    assert "check p95 not yet" in event.details["reason"]


def test_decide__answers_before_the_rollback__do_not_count(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given: failing runs without the window's marker (measured while treated)
    rollout = rolled_back()
    for name in ("errors", "p95"):
        services.check_run_record(
            check_id=rollout.checks.get(name=name).pk,
            phase_index=0,
            value=0.1,
            verdict="fail",
            detail={"answer": "worse", "comparison": comparison("worse")},
        )
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert result is None
    assert rollout.verification_state == State.VERIFYING
    assert RollbackRun.objects.count() == 1


def test_verification_escalate__redelivered__one_run_one_event(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    since = rollout.verification["since"]
    # When
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            services.rollout_verification_escalate(
                rollout_id=rollout.pk,
                expected_since=since,
                level=2,
                reason="still worse",
                actor=SYSTEM,
            )
    # Then
    assert RollbackRun.objects.filter(level=2).count() == 1
    assert events(rollout, "rollout.rollback_escalated").count() == 1


def test_verification_conclude__stale_window__unchanged(rolled_back):
    # Given
    rollout = rolled_back()
    # When
    services.rollout_verification_conclude(
        rollout_id=rollout.pk,
        expected_since="2000-01-01T00:00:00+00:00",
        state=State.RECOVERED,
        reason="x",
        actor=SYSTEM,
    )
    # Then
    rollout.refresh_from_db()
    assert rollout.verification_state == State.VERIFYING
    assert not events(rollout, "rollout.verified").exists()


def test_operator_escalation_during_the_window__followed_and_verified_again(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given: an operator escalates by hand while the window is open
    rollout = rolled_back()
    with django_capture_on_commit_callbacks(execute=True):
        services.rollout_escalate(
            rollout_id=rollout.pk, level=2, actor=SYSTEM, reason="by hand"
        )
    answer(rollout, "errors", "worse")  # a level-1 answer, now out of date
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then: the level-2 run is verified; no automatic escalation to 3
    assert result["action"] == "verify:verifying"
    assert rollout.verification["level"] == 2
    assert RollbackRun.objects.latest("id").level == 2


# -- stopping automatic escalation ----------------------------------------------


def test_escalation_stop__then_worse__stopped_and_not_escalated(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given
    rollout = rolled_back()
    services.rollout_escalation_stop(
        rollout_id=rollout.pk, actor=SYSTEM, reason="investigating by hand"
    )
    answer(rollout, "errors", "worse")
    # When
    result = tick(rollout, django_capture_on_commit_callbacks)
    # Then
    assert result["action"] == "verify:stopped"
    assert rollout.verification_state == State.STOPPED
    assert RollbackRun.objects.count() == 1
    stopped = events(rollout, "rollout.escalation_stopped").get()
    assert stopped.details["reason"] == "investigating by hand"
    assert stopped.details["verification_state"] == "verifying"
    event = events(rollout, "rollout.verification_stopped").get()
    assert "escalate by hand to level 2 (deployment revert)" in event.details["reason"]


def test_escalation_stop__twice__one_event(rollout_factory):
    # Given
    rollout = rollout_factory(checks=COMPARE_CHECKS)
    # When
    for _ in range(2):
        services.rollout_escalation_stop(rollout_id=rollout.pk, actor=SYSTEM, reason="")
    # Then
    rollout.refresh_from_db()
    assert rollout.auto_escalate is False
    assert events(rollout, "rollout.escalation_stopped").count() == 1


def test_escalation_stop__aborted__conflict(rollout_factory):
    # Given
    rollout = rollout_factory(checks=COMPARE_CHECKS)
    services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="x")
    # When
    with pytest.raises(Conflict) as refused:
        services.rollout_escalation_stop(rollout_id=rollout.pk, actor=SYSTEM, reason="")
    # Then
    assert "nothing to escalate" in refused.value.message
    assert not events(rollout, "rollout.escalation_stopped").exists()


# -- claiming --------------------------------------------------------------------


def test_claim__open_window__compare_checks_measured_in_the_window(
    rolled_back, fake_clock
):
    # Given
    rollout = rolled_back()
    # When
    rollouts, jobs = claim_due(rollout_id=rollout.pk, now=clock.now())
    # Then
    assert rollouts == [rollout.pk]
    assert sorted(j.check_name for j in jobs) == ["errors", "p95"]
    job = jobs[0]
    assert job.phase_index == 0
    assert job.context.since.isoformat() == rollout.verification["since"]
    assert job.detail == {
        "verification": {
            "since": rollout.verification["since"],
            "level": 1,
            "run": rollout.verification["rollback_run"],
        }
    }
    if hasattr(job.context, "treated_merchants"):
        assert job.context.treated_merchants == ("m-pilot",)
    # leased: a second claim measures nothing
    assert claim_due(rollout_id=rollout.pk, now=clock.now())[1] == []


def test_decide__escalation_run_pending__waits_for_it(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given: escalated, its run not executed yet
    rollout = rolled_back()
    answer(rollout, "errors", "worse")
    with django_capture_on_commit_callbacks(execute=False):
        decide(rollout.pk)
    rollout.refresh_from_db()
    pending = RollbackRun.objects.latest("id")
    # When
    result = decide(rollout.pk)
    # Then
    assert rollout.verification_state == State.ESCALATING
    assert rollout.verification["escalation_run"] == pending.pk
    assert pending.status == "pending" and result is None


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_decide__two_controllers_at_once__one_escalation(rolled_back):
    # Given: committed data; two controllers decide the same worse window
    import threading

    from django.db import connection

    rollout = rolled_back()
    answer(rollout, "errors", "worse")
    barrier = threading.Barrier(2)
    results: list[object] = []

    def controller() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(decide(rollout.pk))
        except Exception as exc:  # reported below
            results.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=controller) for _ in range(2)]
    # When
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # Then: SKIP LOCKED and the window's key let exactly one act
    assert not [r for r in results if isinstance(r, Exception)], results
    assert RollbackRun.objects.filter(trigger_ref=str(rollout.pk), level=2).count() == 1
    assert events(rollout, "rollout.rollback_escalated").count() == 1


def test_verification_escalate__operator_escalated_meanwhile__unchanged(
    rolled_back, django_capture_on_commit_callbacks
):
    # Given: the window read before an operator's level-2 run was started
    rollout = rolled_back()
    since = rollout.verification["since"]
    services.rollout_escalate(
        rollout_id=rollout.pk, level=2, actor=SYSTEM, reason="by hand"
    )
    # When
    after = services.rollout_verification_escalate(
        rollout_id=rollout.pk,
        expected_since=since,
        level=2,
        reason="still worse",
        actor=SYSTEM,
    )
    # Then: neither exhausted nor a second run; the controller follows
    assert after.verification_state == State.VERIFYING
    assert RollbackRun.objects.filter(level=2).count() == 1


def test_rollout_status_command__open_window__verification_line(rolled_back):
    # Given
    from io import StringIO

    from django.core.management import call_command

    rollout = rolled_back()
    out = StringIO()
    # When
    call_command("rollout", "status", str(rollout.pk), stdout=out)
    # Then
    assert (
        f"  verification after the rollback: verifying at level 1 until "
        f"{rollout.verification['until']}: verifying the level 1 rollback"
    ) in out.getvalue()
