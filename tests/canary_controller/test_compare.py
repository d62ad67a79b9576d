"""Compare checks through the real controller: evidence-based gates.

Outcome events go through the ingestion service, ``controller_tick`` runs
on a ``canary.clock.FakeClock``, and which merchant is treated is the real
flag evaluation. The fleet has heterogeneous merchants (some five times
more error-prone than others, in both arms), so a merchant compared with
the fleet instead of with itself would look worse.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, HealthCheck, Rollout, RolloutStatus, Verdict
from canary.services.outcomes import outcome_events_ingest
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import answers

Status = RolloutStatus
START = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
FLEET = [f"cm-{i:03d}" for i in range(40)]
PILOT = "cm-000"  # error-prone: 5% errors where most merchants have 1%
LOOKBACK = 4 * 3600
STEP = 30


def compare_check(**overrides) -> dict:
    return {
        "name": "error_rate",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "error_rate"},
        "margin": 0.02,
        "alpha": 0.05,
        "interval": STEP,
        **overrides,
    }


def phases(**prove) -> list[dict]:
    return [
        {
            "name": "pilot",
            "target_type": "pilot",
            "pilot_merchants": [PILOT],
            "gate": "guard",
            "min_duration": 120,
        },
        {
            "name": "50%",
            "percentage": 50,
            "gate": "prove",
            "min_duration": 300,
            "max_duration": prove.get("max_duration", 3600),
        },
        {"name": "100%", "percentage": 100, "gate": "prove", "min_duration": 120},
    ]


class Fleet:
    """Merchants with their own error rates; treated ones get ``extra``."""

    def __init__(self, environment, *, extra: float = 0.0, seed: int = 7) -> None:
        self.environment = environment
        self.extra = extra
        self.rng = random.Random(seed)
        self.error = {
            key: (0.05 if key == PILOT or i % 5 == 0 else 0.01)
            for i, key in enumerate(FLEET)
        }
        self.treated_events = 0

    def report(self, start: dt.datetime, end: dt.datetime, per_minute: float) -> None:
        served = answers(self.environment, "sequential_workflow", FLEET)
        span = (end - start).total_seconds()
        events = []
        for key in FLEET:
            treated = served[key] is True
            rate = self.error[key] + (self.extra if treated else 0.0)
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
            self.treated_events += treated
        for i in range(0, len(events), 5000):
            outcome_events_ingest(
                events=events[i : i + 5000], environment=self.environment
            )


@pytest.fixture
def fleet_merchants(merchant_factory):
    return [merchant_factory(key) for key in FLEET]


def _run(fleet: Fleet, rollout_factory, fake, *, per_minute=6.0, steps=400, **kw):
    fleet.report(START - dt.timedelta(seconds=LOOKBACK), START, per_minute=0.5)
    rollout = rollout_factory(phases=phases(**kw), checks=[compare_check()])
    for _ in range(steps):
        if Rollout.objects.get(pk=rollout.pk).status != Status.RUNNING:
            break
        before = fake()
        fake.advance(STEP)
        fleet.report(before, fake(), per_minute=per_minute)
        controller_tick()
    rollout.refresh_from_db()
    return rollout


def _events(rollout: Rollout, action: str) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(target_id=str(rollout.pk), action=action).order_by(
            "id"
        )
    )


def test_compare__healthy_error_prone_pilot__guard_then_prove_then_completes(
    production, fleet_merchants, rollout_factory
):
    # Given: a healthy change whose pilot has 5x the fleet's error rate
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = Fleet(production)
        # When
        rollout = _run(fleet, rollout_factory, fake)
    # Then: completed; the pilot left on its soak, the prove phases on
    # "not worse", the 100% phase against the control's last window
    assert rollout.status == Status.COMPLETED
    assert len(rollout.merchant_baseline["merchants"]) == len(FLEET)
    advanced = _events(rollout, "rollout.phase_advanced")
    assert len(advanced) == 2
    check = HealthCheck.objects.get(rollout=rollout)
    assert check.inconclusive_count == 0
    last = CheckRun.objects.filter(rollout=rollout).order_by("-id").first()
    comparison = last.detail["comparison"]
    assert last.detail["answer"] == "not_worse"
    assert comparison["drift_correction"] == "control's last window"
    assert comparison["upper"] < comparison["margin"]
    for event in advanced:
        (item,) = event.details["checks"]
        assert item["check"] == "error_rate"
        assert {
            "answer",
            "estimate",
            "lower",
            "upper",
            "margin",
            "evidence",
            "rule",
        } <= set(item)
    assert advanced[1].details["checks"][0]["answer"] == "not_worse"
    assert advanced[1].details["checks"][0]["upper"] < 0.02


def test_compare__treated_errors_up_10pp__rolled_back_with_its_evidence(
    production, fleet_merchants, rollout_factory
):
    # Given: the treatment adds 10 points of errors
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = Fleet(production, extra=0.10)
        # When
        rollout = _run(fleet, rollout_factory, fake)
    # Then: rolled back, the decision carrying the comparison that fired
    assert rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    (failed,) = _events(rollout, "rollout.phase_failed")
    (item,) = failed.details["checks"]
    assert item["answer"] == "worse"
    assert item["lower"] > 0 and item["estimate"] > item["margin"] == 0.02
    assert item["evidence"]["treated_events"] > 0
    assert item["rule"] == "lower_bound_above_zero_estimate_above_margin"
    assert "lower bound is above zero" in failed.details["reason"]


def test_compare__prove_phase_without_enough_traffic__waits_then_pauses_with_what_it_needs(
    production, fleet_merchants, rollout_factory
):
    # Given: a trickle of events, too little to prove anything in 10 minutes
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        fleet = Fleet(production)
        # When
        rollout = _run(fleet, rollout_factory, fake, per_minute=0.05, max_duration=600)
    # Then: it held in the prove phase (no advance on mere absence of
    # failure), then paused at max_duration saying why; not_yet never
    # counted as inconclusive
    assert rollout.status == Status.PAUSED
    assert rollout.current_phase == 1
    assert "max_duration" in rollout.pause_reason
    assert "needs about" in rollout.pause_reason and "x the treated events so far" in (
        rollout.pause_reason
    )
    check = HealthCheck.objects.get(rollout=rollout)
    assert check.inconclusive_count == 0
    verdicts = set(
        CheckRun.objects.filter(rollout=rollout, phase_index=1).values_list(
            "verdict", flat=True
        )
    )
    assert Verdict.NOT_YET in verdicts and Verdict.FAIL not in verdicts
