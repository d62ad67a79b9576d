"""Releases through the real controller: lockstep, partial and whole rollback.

Three bool flags are released together. Outcome events name every flag
with the variation the real flag evaluation served (``flags``), go through
the ingestion service, and ``controller_tick`` runs on a FakeClock. One
flag's treatment fails 30 points more often: in a 50% phase only that
flag is rolled back and the other two complete; in the pilot phase (every
flag on the same merchant) the release rolls back as a whole.
"""

from __future__ import annotations

import datetime as dt
import random

import pytest

from canary import clock
from canary.controller import controller_tick
from canary.models import CheckRun, Release, ReleaseStatus, Rollout, RolloutStatus
from canary.services.outcomes import outcome_events_ingest
from canary.services.releases import release_create, release_members, release_start
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from tests.canary_controller.conftest import answers

Status = RolloutStatus
START = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)
FLEET = [f"rm-{i:03d}" for i in range(40)]
# An interaction makes merchants of one arm unlike each other (half hurt,
# half not): the merchant-level bounds need more merchants to be sure.
BIG_FLEET = [f"rm-{i:03d}" for i in range(100)]
PILOT = "rm-000"
KEYS = ["queue_ai_enrichment", "analytics_forecasting", "export_scheduling"]
STEP = 30


def _check() -> dict:
    return {
        "name": "error_rate",
        "provider": "outcomes",
        "mode": "compare",
        "spec": {"metric": "error_rate"},
        "margin": 0.03,
        "alpha": 0.05,
        "interval": STEP,
    }


def _phases(*, pilot_first: bool) -> list[dict]:
    phases = [
        {"name": "50%", "percentage": 50, "gate": "prove", "min_duration": 120},
        {"name": "100%", "percentage": 100, "gate": "prove", "min_duration": 60},
    ]
    if pilot_first:
        phases.insert(
            0,
            {
                "name": "pilot",
                "target_type": "pilot",
                "pilot_merchants": [PILOT],
                "gate": "guard",
                "min_duration": 600,
            },
        )
    return phases


class Traffic:
    """Every merchant's requests; a request served ``bad``'s treatment
    fails ``extra`` more often (``both``: only when it is served the
    treatment of both flags named)."""

    def __init__(
        self,
        environment,
        *,
        bad: str,
        extra: float,
        both: tuple[str, str] = (),
        fleet: list[str] = FLEET,
    ) -> None:
        self.environment = environment
        self.fleet = fleet
        self.bad, self.extra, self.both = bad, extra, both
        self.rng = random.Random(11)

    def _hurts(self, flags: dict[str, str]) -> bool:
        if self.both:
            return all(flags[key] == "on" for key in self.both)
        return flags[self.bad] == "on"

    def report(self, start, end, per_minute: float, *, served=None) -> None:
        served = served or {
            key: answers(self.environment, key, self.fleet) for key in KEYS
        }
        span = (end - start).total_seconds()
        events = []
        for merchant in self.fleet:
            flags = {
                key: "on" if served[key][merchant] is True else "off" for key in KEYS
            }
            rate = 0.01 + (self.extra if self._hurts(flags) else 0.0)
            for _ in range(max(1, round(per_minute * span / 60))):
                at = start + dt.timedelta(seconds=self.rng.random() * span)
                events.append(
                    {
                        "flags": flags,
                        "merchant": merchant,
                        "outcome": "failure" if self.rng.random() < rate else "success",
                        "duration_ms": 50.0 + self.rng.random() * 10,
                        "occurred_at": at.timestamp(),
                    }
                )
        for i in range(0, len(events), 1500):
            outcome_events_ingest(
                events=events[i : i + 1500], environment=self.environment
            )


@pytest.fixture
def release_fleet(production, flag_factory, merchant_factory):
    for key in FLEET:
        merchant_factory(key)
    for key in KEYS:
        flag_factory(key)
    return production


def _run(
    environment,
    fake,
    *,
    pilot_first: bool,
    extra: float,
    both: tuple = (),
    fleet: list[str] = FLEET,
) -> Release:
    traffic = Traffic(
        environment, bad="analytics_forecasting", extra=extra, both=both, fleet=fleet
    )
    off = {key: dict.fromkeys(fleet, False) for key in KEYS}
    traffic.report(START - dt.timedelta(hours=4), START, per_minute=0.5, served=off)
    release = release_create(
        actor=SYSTEM,
        environment=environment,
        flags=KEYS,
        phases=_phases(pilot_first=pilot_first),
        checks=[_check()],
        name="phase 1",
    )
    release_start(release_id=release.pk, actor=SYSTEM)
    for _ in range(200):
        release.refresh_from_db()
        if release.status != ReleaseStatus.RUNNING:
            break
        before = fake()
        fake.advance(STEP)
        traffic.report(before, fake(), per_minute=6.0)
        controller_tick()
    release.refresh_from_db()
    return release


def _rollbacks_counted() -> float:
    from prometheus_client import REGISTRY

    return (
        REGISTRY.get_sample_value(
            "controlplane_canary_automatic_rollbacks_total", {"cause": "outcomes"}
        )
        or 0.0
    )


def _actions(release: Release) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            target_type="canary.release", target_id=str(release.pk)
        )
        .order_by("id")
        .values_list("action", flat=True)
    )


def test_release__one_flag_worse_at_50pct__only_it_rolled_back_rest_complete(
    release_fleet, transactional_db
):
    # Given: three flags released together; analytics_forecasting's
    # treatment fails 30 points more often
    fake = clock.FakeClock(START)
    counted_before = _rollbacks_counted()
    with clock.swapped(fake):
        # When
        release = _run(release_fleet, fake, pilot_first=False, extra=0.30)
    # Then: one automatic rollback counted, caused by the outcomes check
    assert _rollbacks_counted() == counted_before + 1
    # Then: the faulty flag alone rolled back, the other two completed
    members = {m.flag.key: m for m in release_members(release)}
    assert members["analytics_forecasting"].status == Status.ROLLED_BACK
    assert members["queue_ai_enrichment"].status == Status.COMPLETED
    assert members["export_scheduling"].status == Status.COMPLETED
    assert release.status == ReleaseStatus.COMPLETED
    assert release.summary["deployed"] == ["queue_ai_enrichment", "export_scheduling"]
    assert [item["flag"] for item in release.summary["rolled_back"]] == [
        "analytics_forecasting"
    ]
    # Then: the audit trail names the partial rollback and the completion
    actions = _actions(release)
    assert actions[:2] == ["release.created", "release.started"]
    assert "release.partially_rolled_back" in actions
    assert actions[-1] == "release.completed"
    partial = AuditEvent.objects.get(
        target_id=str(release.pk), action="release.partially_rolled_back"
    )
    assert partial.details["rolled_back"] == ["analytics_forecasting"]
    assert sorted(partial.details["continuing"]) == [
        "export_scheduling",
        "queue_ai_enrichment",
    ]
    assert partial.details["attribution"]["scope"] == "partial"
    # ... and the others' compare checks leave out, for the rest of that
    # phase, the merchants served the rolled-back feature's treatment
    assert partial.details["excluded_treated_of"] == ["analytics_forecasting"]
    measured = [
        (run.detail or {}).get("measurement_detail") or {}
        for run in CheckRun.objects.filter(
            rollout=members["queue_ai_enrichment"],
            phase_index=partial.details["phase"],
        )
    ]
    cleaned = [d for d in measured if "excluded_treated" in d]
    assert cleaned, "no compare run of a continuing member left them out"
    assert all(d["excluded_treated"]["analytics_forecasting"] > 0 for d in cleaned)
    faulty_runs = CheckRun.objects.filter(rollout=members["analytics_forecasting"])
    assert not any(
        "excluded_treated" in ((r.detail or {}).get("measurement_detail") or {})
        for r in faulty_runs
    )
    blamed = partial.details["estimates"]["analytics_forecasting"]["error_rate"]
    assert blamed["decision"] == "worse" and blamed["lower"] > 0
    completed = AuditEvent.objects.get(
        target_id=str(release.pk), action="release.completed"
    )
    assert completed.details["features_deployed"] == [
        "queue_ai_enrichment",
        "export_scheduling",
    ]
    assert completed.details["features_rolled_back"] == ["analytics_forecasting"]
    kept = completed.details["estimates"]["queue_ai_enrichment"]["error_rate"]
    assert kept["decision"] == "not_worse"
    # Then: the flags serve what was decided (the faulty one is back off)
    served = {key: answers(release_fleet, key, FLEET[:5]) for key in KEYS}
    assert set(served["analytics_forecasting"].values()) == {False}
    assert set(served["queue_ai_enrichment"].values()) == {True}


def test_release__worse_in_pilot_phase__whole_release_rolled_back(
    release_fleet, transactional_db
):
    # Given: the pilot merchant gets every flag; one flag hurts it badly
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        # When
        release = _run(release_fleet, fake, pilot_first=True, extra=0.60)
    # Then: the pilot cannot tell the flags apart: all three roll back
    statuses = {m.flag.key: m.status for m in release_members(release)}
    assert set(statuses.values()) == {Status.ROLLED_BACK}
    assert release.status == ReleaseStatus.ROLLED_BACK
    started = AuditEvent.objects.get(
        target_id=str(release.pk), action="release.rollback_started"
    )
    assert started.details["attribution"]["scope"] == "whole"
    assert "cannot be attributed" in started.details["attribution"]["reason"]
    assert _actions(release)[-1] == "release.rolled_back"


def test_release__healthy__members_advance_in_lockstep(release_fleet, transactional_db):
    # Given: three healthy flags
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        # When
        release = _run(release_fleet, fake, pilot_first=False, extra=0.0)
    # Then: everything completed, and every phase change moved all three
    # members in one decision (same phase-advanced times)
    assert release.status == ReleaseStatus.COMPLETED
    members = list(Rollout.objects.filter(release=release))
    assert {m.status for m in members} == {Status.COMPLETED}
    times = {
        m.pk: list(
            AuditEvent.objects.filter(
                target_id=str(m.pk), action="rollout.phase_advanced"
            ).values_list("before__phase", flat=True)
        )
        for m in members
    }
    assert len({tuple(v) for v in times.values()}) == 1
    finished = {m.finished_at for m in members}
    assert len(finished) == 1


def test_release__harm_only_with_two_flags_together__whole_release_as_interaction(
    release_fleet, merchant_factory, transactional_db
):
    # Given: requests fail 30 points more often only when served both
    # queue_ai_enrichment and analytics_forecasting (neither alone hurts)
    for key in BIG_FLEET[len(FLEET) :]:
        merchant_factory(key)
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        # When
        release = _run(
            release_fleet,
            fake,
            pilot_first=False,
            extra=0.30,
            both=("queue_ai_enrichment", "analytics_forecasting"),
            fleet=BIG_FLEET,
        )
    # Then: the regression belongs to the combination: all three roll back,
    # and the reason names the interaction
    statuses = {m.flag.key: m.status for m in release_members(release)}
    assert set(statuses.values()) == {Status.ROLLED_BACK}
    started = AuditEvent.objects.get(
        target_id=str(release.pk), action="release.rollback_started"
    )
    attribution = started.details["attribution"]
    assert attribution["scope"] == "whole"
    assert "interaction" in attribution["reason"]
    assert attribution["evidence"]["interactions"]
