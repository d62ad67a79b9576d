"""Dry-run checks: measured and recorded every interval, never decide.

The real ``controller_tick`` on a ``FakeClock`` (as in test_clock.py): a
check that fails every measurement does not stop the rollout when it is a
dry run, and rolls it back when it is not.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, Rollout, RolloutStatus, Verdict
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import FOUR_PHASES, outcomes_check

Status = RolloutStatus
START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)
PHASES = [{**phase, "min_duration": 60} for phase in FOUR_PHASES]


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s: the simulated clock must be enough")


def _always_failing(dry_run: bool) -> dict:
    # Healthy traffic has an error rate of 0, never above 0.5: every
    # measurement fails.
    return outcomes_check(
        name="shadow",
        comparator="gt",
        threshold=0.5,
        interval=30,
        failure_limit=0,
        on_failure="rollback_1",
        dry_run=dry_run,
    )


def _drive(rollout: Rollout, fake: clock.FakeClock, report_outcomes) -> int:
    ticks = 0
    while Rollout.objects.get(pk=rollout.pk).status == Status.RUNNING:
        assert ticks < 100, "the rollout never finished"
        report_outcomes(successes=40)
        controller_tick()
        fake.advance(30)
        ticks += 1
    return ticks


def test_controller_tick__dry_run_check_fails_every_time__rollout_completes(
    rollout_factory, report_outcomes, monkeypatch
):
    # Given: a passing error-rate check and a dry-run check failing always
    monkeypatch.setattr(time, "sleep", _no_sleep)
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = rollout_factory(
            phases=PHASES,
            checks=[outcomes_check(interval=30), _always_failing(dry_run=True)],
        )
        # When
        _drive(rollout, fake, report_outcomes)
    # Then: completed through every phase, with no rollback
    done = Rollout.objects.get(pk=rollout.pk)
    assert done.status == Status.COMPLETED
    advanced = AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    )
    assert sorted(event.after["phase"] for event in advanced) == [1, 2, 3]
    assert not AuditEvent.objects.filter(
        action="rollout.transition",
        target_id=str(rollout.pk),
        after__status=Status.ROLLING_BACK,
    ).exists()
    # and the dry-run check was measured in every phase, every time failing
    shadow = CheckRun.objects.filter(rollout=rollout, health_check__name="shadow")
    assert shadow.count() >= 4 * 2
    assert set(shadow.values_list("verdict", flat=True)) == {Verdict.FAIL}
    assert set(shadow.values_list("phase_index", flat=True)) == {0, 1, 2, 3}
    assert all(run.value == 0.0 for run in shadow)
    # its audit events say it did not act
    failed = AuditEvent.objects.filter(action="check.failed")
    assert failed.exists()
    assert all(event.details["dry_run"] is True for event in failed)


def test_controller_tick__same_check_not_dry_run__rolled_back_in_pilot(
    rollout_factory, report_outcomes, monkeypatch
):
    # Given: the same always-failing check, deciding this time
    monkeypatch.setattr(time, "sleep", _no_sleep)
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = rollout_factory(
            phases=PHASES,
            checks=[outcomes_check(interval=30), _always_failing(dry_run=False)],
        )
        # When
        _drive(rollout, fake, report_outcomes)
    # Then
    done = Rollout.objects.get(pk=rollout.pk)
    assert done.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    assert done.current_phase == 0
    (failed,) = AuditEvent.objects.filter(action="check.failed")
    assert failed.details["dry_run"] is False


@pytest.mark.parametrize("dry_run", [True, False])
def test_rollout_gate__failed_check__only_a_deciding_one_fails_the_phase(
    rollout_factory, report_outcomes, dry_run
):
    # Given
    from canary import services

    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = rollout_factory(
            phases=PHASES, checks=[_always_failing(dry_run=dry_run)]
        )
        report_outcomes(successes=40)
        controller_tick()
        # When
        decision = services.rollout_gate(
            rollout=Rollout.objects.get(pk=rollout.pk), now=fake()
        )
    # Then
    check = rollout.checks.get()
    check.refresh_from_db()
    assert check.status == "failed"  # measured and counted either way
    assert (decision.action == "fail") is (not dry_run)
