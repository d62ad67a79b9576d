"""A 100% phase compares with the previous phase's control from just before
the move, time-matched, not with that phase's whole range.

The fleet's error rate climbs steadily in both arms (a daily swing). The
treatment is harmless. Against the 50% phase's whole hour of control
events, the 100% phase's treated merchants look about 2 points worse than
they are; against the control's last stretch before the move, the drift
mostly cancels and the rollout completes.
"""

from __future__ import annotations

import datetime as dt

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, Rollout, RolloutStatus
from canary.services.comparisons import STAND_IN
from tests.canary_controller.test_compare import (
    LOOKBACK,
    PILOT,
    START,
    STEP,
    Fleet,
    compare_check,
)
from tests.canary_controller.test_compare import (
    fleet_merchants as fleet_merchants,  # noqa: F401 (fixture)
)

Status = RolloutStatus
# points of error rate added per hour, to both arms alike
DRIFT_PER_HOUR = 0.05
PHASES = [
    {
        "name": "pilot",
        "target_type": "pilot",
        "pilot_merchants": [PILOT],
        "gate": "guard",
        "min_duration": 120,
    },
    {"name": "50%", "percentage": 50, "gate": "prove", "min_duration": 3600},
    {"name": "100%", "percentage": 100, "gate": "prove", "min_duration": 120},
]


class DriftingFleet(Fleet):
    """``Fleet`` whose every merchant's error rate climbs with time."""

    def report(self, start: dt.datetime, end: dt.datetime, per_minute: float) -> None:
        hours = max(0.0, (start - self.drift_from).total_seconds() / 3600)
        saved = dict(self.error)
        self.error = {k: v + DRIFT_PER_HOUR * hours for k, v in saved.items()}
        try:
            super().report(start, end, per_minute)
        finally:
            self.error = saved


def _run(environment, rollout_factory, fake) -> Rollout:
    fleet = DriftingFleet(environment)
    fleet.drift_from = START
    fleet.report(START - dt.timedelta(seconds=LOOKBACK), START, per_minute=0.5)
    rollout = rollout_factory(phases=PHASES, checks=[compare_check()])
    for _ in range(600):
        if Rollout.objects.get(pk=rollout.pk).status != Status.RUNNING:
            break
        before = fake()
        fake.advance(STEP)
        fleet.report(before, fake(), per_minute=12.0)
        controller_tick()
    rollout.refresh_from_db()
    return rollout


def _last_phase_runs(rollout: Rollout) -> list[CheckRun]:
    return list(CheckRun.objects.filter(rollout=rollout, phase_index=2))


def test_100pct_phase__shared_drift__time_matched_control_completes(
    production, fleet_merchants, rollout_factory
):
    # Given: a harmless treatment and an error rate climbing in both arms
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        # When
        rollout = _run(production, rollout_factory, fake)
    # Then: completed, against the control's last stretch before the move
    assert rollout.status == Status.COMPLETED
    runs = _last_phase_runs(rollout)
    assert runs
    for run in runs:
        detail = run.detail["measurement_detail"]
        until = dt.datetime.fromisoformat(detail["previous_until"])
        since = dt.datetime.fromisoformat(detail["previous_since"])
        elapsed = (run.measured_at - until).total_seconds()
        # as long as the phase has run, and at least 15 minutes
        assert (until - since).total_seconds() == pytest.approx(
            max(elapsed, 900), abs=STEP
        )
        assert run.detail["comparison"]["drift_correction"] == STAND_IN


def test_100pct_phase__shared_drift__whole_previous_phase_rolls_back(
    production, fleet_merchants, rollout_factory, settings
):
    # Given: the same, but the stand-in is the previous phase's whole hour
    # (what the controller did before)
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "CANARY_STAND_IN_MIN_SECONDS": 10 * 86400,
    }
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        # When
        rollout = _run(production, rollout_factory, fake)
    # Then: the drift alone reads as "worse": a false rollback
    assert rollout.status in (Status.ROLLED_BACK, Status.ROLLING_BACK)
    failed = [r for r in _last_phase_runs(rollout) if r.verdict == "fail"]
    assert failed, "the rollback came from elsewhere than the 100% phase"
