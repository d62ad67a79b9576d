"""After a rollback, end to end: detect, roll back, verify, escalate.

Outcome events go through the ingestion service, ``controller_tick`` runs
on a ``canary.clock.FakeClock``, which merchant is treated is the real flag
evaluation, and the deployment revert is real (the symlink backend). Two
faults that look alike before the rollback: one lives in the flag (gone
once the flag is back: verified at level 1, never escalated), the other
in the deployment (the merchants that were treated keep failing after the
flag is back, as after a bad migration that touched their data, until the
deployment is reverted: escalated to level 2, then verified).
"""

from __future__ import annotations

import datetime as dt
import os
import random

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, Rollout, RolloutStatus, VerificationState
from canary.services.outcomes import outcome_events_ingest
from controlplane.audit.models import AuditEvent
from rollback.models import RollbackRun
from tests.canary_controller.conftest import answers
from tests.canary_controller.test_compare import (
    FLEET,
    LOOKBACK,
    START,
    STEP,
    compare_check,
    phases,
)
from tests.canary_controller.test_verify import (  # noqa: F401 (fixtures)
    deployment,
    releases,
)

Status = RolloutStatus
State = VerificationState


class FaultyFleet:
    """Merchants with their own error rates; ``extra`` more errors for the
    treated ones, and, when ``persists``, for every merchant ever treated
    until a rollback run of level 2 or more succeeded."""

    def __init__(self, environment, *, extra: float, persists: bool) -> None:
        self.environment = environment
        self.extra = extra
        self.persists = persists
        self.rng = random.Random(11)
        self.error = {
            key: (0.05 if i % 5 == 0 else 0.01) for i, key in enumerate(FLEET)
        }
        self.ever_treated: set[str] = set()

    def _deployment_reverted(self) -> bool:
        return RollbackRun.objects.filter(level__gte=2, status="succeeded").exists()

    def report(self, start: dt.datetime, end: dt.datetime, per_minute: float) -> None:
        served = answers(self.environment, "sequential_workflow", FLEET)
        reverted = self._deployment_reverted()
        span = (end - start).total_seconds()
        events = []
        for key in FLEET:
            treated = served[key] is True
            if treated:
                self.ever_treated.add(key)
            faulty = treated or (
                self.persists and key in self.ever_treated and not reverted
            )
            if reverted:
                faulty = False
            rate = self.error[key] + (self.extra if faulty else 0.0)
            for _ in range(max(1, round(per_minute * span / 60))):
                at = start + dt.timedelta(seconds=self.rng.random() * span)
                events.append(
                    {
                        "flag": "sequential_workflow",
                        "merchant": key,
                        "variation": "on" if treated else "off",
                        "outcome": "failure" if self.rng.random() < rate else "success",
                        "duration_ms": 50.0 + self.rng.random() * 10,
                        "occurred_at": at.timestamp(),
                    }
                )
        for i in range(0, len(events), 5000):
            outcome_events_ingest(
                events=events[i : i + 5000], environment=self.environment
            )


@pytest.fixture
def fleet_merchants(merchant_factory):
    return [merchant_factory(key) for key in FLEET]


def _run(
    fleet: FaultyFleet, rollout: Rollout, fake, capture, *, steps: int = 400
) -> Rollout:
    """Report and tick every STEP seconds until the verification is over;
    what a tick queues on commit (rollback runs, ticks) runs at once."""
    for _ in range(steps):
        rollout.refresh_from_db()
        over = rollout.status == Status.ROLLED_BACK and rollout.verification_state in (
            "",
            State.RECOVERED,
            State.ENDED,
            State.EXHAUSTED,
            State.STOPPED,
            State.FAILED,
        )
        if over or rollout.status in (Status.COMPLETED, Status.PAUSED):
            break
        before = fake()
        fake.advance(STEP)
        fleet.report(before, fake(), per_minute=6.0)
        with capture(execute=True):
            controller_tick()
    rollout.refresh_from_db()
    return rollout


def _actions(rollout: Rollout) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            target_type="canary.rollout", target_id=str(rollout.pk)
        )
        .order_by("id")
        .values_list("action", flat=True)
    )


def _start(production, rollout_factory, deployment, fleet: FaultyFleet) -> Rollout:
    fleet.report(START - dt.timedelta(seconds=LOOKBACK), START, per_minute=0.5)
    return rollout_factory(
        phases=phases(), checks=[compare_check()], deployment=deployment.pk
    )


def test_verify__fault_persists_after_the_flag__escalated_to_level_2_then_recovered(
    production,
    fleet_merchants,
    rollout_factory,
    deployment,
    releases,
    django_capture_on_commit_callbacks,
):
    # Given: +10 points of errors that stay with the treated merchants
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = FaultyFleet(production, extra=0.10, persists=True)
        rollout = _start(production, rollout_factory, deployment, fleet)
        # When
        rollout = _run(fleet, rollout, fake, django_capture_on_commit_callbacks)
    # Then: rolled back at 1, still worse, escalated to 2 (the deployment
    # reverted), then verified as recovered at level 2
    runs = list(RollbackRun.objects.order_by("id").values_list("level", "status"))
    assert runs == [(1, "succeeded"), (2, "succeeded")]
    assert os.readlink(releases / "current") == "releases/v1"
    assert rollout.verification_state == State.RECOVERED
    assert rollout.verification["level"] == 2
    actions = _actions(rollout)
    assert actions.index("rollout.verification_started") < actions.index(
        "rollout.rollback_escalated"
    )
    assert actions[-1] == "rollout.verified"
    escalated = AuditEvent.objects.get(action="rollout.rollback_escalated")
    (item,) = escalated.details["checks"]
    assert item["answer"] == "worse" and item["lower"] > 0
    assert item["estimate"] > item["margin"] == 0.02
    assert item["evidence"]["merchants"] == len(rollout.verification["merchants"])
    assert (
        "automatic escalation to level 2 (deployment revert)"
        in (escalated.details["reason"])
    )
    # the window measured the formerly treated merchants, not a variation
    runs_in_window = CheckRun.objects.filter(
        rollout=rollout, detail__verification__level=1
    )
    assert runs_in_window.exists()
    first = runs_in_window.order_by("id").first()
    assert first.phase_index == rollout.verification["phase"]
    assert first.detail["measurement_detail"]["treated_merchants"] > 0


def test_verify__fault_in_the_flag__verified_at_level_1_and_not_escalated(
    production,
    fleet_merchants,
    rollout_factory,
    deployment,
    releases,
    django_capture_on_commit_callbacks,
):
    # Given: +10 points of errors only while the flag serves the treatment
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = FaultyFleet(production, extra=0.10, persists=False)
        rollout = _start(production, rollout_factory, deployment, fleet)
        # When
        rollout = _run(fleet, rollout, fake, django_capture_on_commit_callbacks)
    # Then
    assert list(RollbackRun.objects.values_list("level", flat=True)) == [1]
    assert os.readlink(releases / "current") == "releases/v2"
    assert rollout.verification_state == State.RECOVERED
    assert rollout.verification["level"] == 1
    verified = AuditEvent.objects.get(action="rollout.verified")
    (item,) = verified.details["checks"]
    assert item["answer"] == "not_worse" and item["upper"] < item["margin"]
    assert "rollout.rollback_escalated" not in _actions(rollout)
