"""A 100% phase compares with the control's last window even when a few
control events land in its range: events served ``off`` in the moment
before the move reached every server (the live demo sees a few dozen in
the first 0.2 s). Counted as a live control of a handful of merchants with
one or two events each, they would keep the interval wide for ever."""

from __future__ import annotations

import datetime as dt

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, Rollout, RolloutStatus
from canary.services.outcomes import outcome_events_ingest
from tests.canary_controller.test_compare import (
    FLEET,
    START,
    STEP,
    Fleet,
    compare_check,
    phases,
)
from tests.canary_controller.test_compare import (
    fleet_merchants as fleet_merchants,  # noqa: F401 (fixture)
)


def _stragglers(environment, at: dt.datetime) -> None:
    """Ten control merchants report one successful ``off`` event each."""
    outcome_events_ingest(
        events=[
            {
                "flag": "sequential_workflow",
                "merchant": key,
                "variation": "off",
                "outcome": "success",
                "duration_ms": 55.0,
                "occurred_at": (at + dt.timedelta(seconds=0.1)).timestamp(),
            }
            for key in FLEET[-10:]
        ],
        environment=environment,
    )


def test_compare__stragglers_in_100_phase__control_last_window_then_completes(
    production,
    fleet_merchants,  # noqa: F811
    rollout_factory,
):
    # Given: a healthy change; the 100% phase gets a few control stragglers
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = Fleet(production)
        fleet.report(START - dt.timedelta(seconds=4 * 3600), START, per_minute=0.5)
        rollout = rollout_factory(phases=phases(), checks=[compare_check()])
        sent = False
        # When
        for _ in range(120):
            current = Rollout.objects.get(pk=rollout.pk)
            if current.status != RolloutStatus.RUNNING:
                break
            if current.current_phase == 2 and not sent:
                _stragglers(production, current.phase_started_at)
                sent = True
            before = fake()
            fake.advance(STEP)
            fleet.report(before, fake(), per_minute=6.0)
            controller_tick()
    # Then: completed, the last phase judged against the control's last
    # window, not against the stragglers
    rollout.refresh_from_db()
    assert sent
    assert rollout.status == RolloutStatus.COMPLETED
    last = CheckRun.objects.filter(rollout=rollout, phase_index=2).order_by("-id")[0]
    assert last.detail["answer"] == "not_worse"
    comparison = last.detail["comparison"]
    assert comparison["drift_correction"] == "control's last window"
    assert comparison["control_merchants"] > 10
