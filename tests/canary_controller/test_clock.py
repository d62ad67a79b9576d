"""The swappable clock: a whole rollout on simulated time, without sleeping.

The real ``controller_tick`` and the real ingestion service run on the
database; only ``canary.clock`` is swapped for a ``FakeClock`` that the test
moves, and ``time.sleep`` is made to fail the test if anything sleeps.
"""

from __future__ import annotations

import datetime as dt
import time

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, OutcomeEvent, Rollout, RolloutStatus
from canary.services.templates import template_phases
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import outcomes_check

Status = RolloutStatus
START = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def _no_sleep(seconds: float) -> None:
    raise AssertionError(f"slept {seconds} s: the simulated clock must be enough")


def test_clock_now__fake_clock_swapped_in__returns_its_time_then_real_time():
    # Given
    fake = clock.FakeClock(START)
    # When
    with clock.swapped(fake):
        first = clock.now()
        fake.advance(90)
        second = clock.now()
    after = clock.now()
    # Then
    assert first == START
    assert second == START + dt.timedelta(seconds=90)
    assert abs((after - dt.datetime.now(dt.UTC)).total_seconds()) < 60


@pytest.mark.parametrize(
    "move",
    [
        lambda fake: fake.advance(-1),
        lambda fake: fake.advance(float("nan")),
        lambda fake: fake.set(START - dt.timedelta(seconds=1)),
        lambda fake: fake.set(dt.datetime(2026, 12, 1, 10, 0)),
    ],
    ids=["negative step", "nan step", "earlier time", "naive time"],
)
def test_fake_clock__moved_back_or_naive__refused_and_unchanged(move):
    # Given
    fake = clock.FakeClock(START)
    # When
    with pytest.raises(ValueError):
        move(fake)
    # Then
    assert fake() == START


def test_controller_tick__fake_clock_through_pilot_10_50_100__completes_without_sleeping(
    rollout_factory, report_outcomes, monkeypatch
):
    # Given: the pilot-10-50-100 plan (65 minutes of soak at least) with an
    # error-rate check every 30 s, on a clock that only the test moves
    monkeypatch.setattr(time, "sleep", _no_sleep)
    fake = clock.FakeClock(START)
    phases = template_phases("pilot-10-50-100", pilot_merchants=["m-pilot"])
    soak = sum(phase["min_duration"] for phase in phases)
    with clock.swapped(fake):
        rollout = rollout_factory(
            phases=phases, checks=[outcomes_check(interval=30, min_samples=2)]
        )
        # When: every 30 simulated seconds, healthy treatment events arrive
        # through the ingestion service and the controller ticks once
        ticks = 0
        while Rollout.objects.get(pk=rollout.pk).status == Status.RUNNING:
            assert ticks < 400, "the rollout never finished"
            report_outcomes(successes=40)
            controller_tick()
            fake.advance(30)
            ticks += 1
    # Then: completed, each phase held for its soak in simulated time
    done = Rollout.objects.get(pk=rollout.pk)
    assert done.status == Status.COMPLETED
    advanced = AuditEvent.objects.filter(
        action="rollout.phase_advanced", target_id=str(rollout.pk)
    ).order_by("id")
    assert [event.after["phase"] for event in advanced] == [1, 2, 3]
    runs = CheckRun.objects.filter(rollout=rollout).order_by("measured_at", "id")
    starts = {0: START}
    for run in runs:
        starts.setdefault(run.phase_index, run.measured_at)
    held = [(starts[index + 1] - starts[index]).total_seconds() for index in range(3)]
    assert held == [
        pytest.approx(phase["min_duration"], abs=30) for phase in phases[:3]
    ]
    assert all(
        seconds >= phase["min_duration"]
        for seconds, phase in zip(held, phases[:3], strict=True)
    )
    assert done.finished_at - done.started_at >= dt.timedelta(seconds=soak)
    assert done.finished_at - START < dt.timedelta(seconds=soak + 10 * 30)
    assert runs.last().measured_at <= fake()
    event_times = OutcomeEvent.objects.values_list("occurred_at", flat=True)
    assert min(event_times) == START and max(event_times) < fake()
