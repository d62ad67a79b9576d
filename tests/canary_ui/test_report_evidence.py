"""The report's verdict is the controller's evidence (issue 9, item 8).

Check runs are recorded through ``check_run_record`` with the detail shape
the controller writes for compare checks (``answer``, ``comparison`` from a
real ``canary.sequential.compare``, ``note``); decisions go through the
services that audit them.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from canary import sequential, services
from canary.models import OutcomeEvent
from canary.report import FIX_AND_RETEST, PROCEED, ROLL_BACK, metric_text, report_build
from canary.report_text import report_json, report_markdown
from controlplane.audit.actors import CONTROLLER

PHASES = [
    {
        "name": "pilot",
        "target_type": "pilot",
        "pilot_merchants": ["m-1001"],
        "gate": "guard",
    },
    {"name": "10%", "target_type": "percentage", "percentage": 10},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
ERRORS = {
    "name": "errors",
    "provider": "outcomes",
    "mode": "compare",
    "spec": {"metric": "error_rate"},
    "margin": 0.01,
    "interval": 30,
}
P95 = {
    "name": "p95",
    "provider": "outcomes",
    "mode": "compare",
    "spec": {"metric": "p95_ms"},
    "margin": 0.10,
    "interval": 30,
}
VERDICT_OF = {"worse": "fail", "not_worse": "pass", "not_yet": "not_yet"}


def comparison(*, extra_rate: float, merchants: int, events: int) -> dict:
    """Return a real error-rate comparison of ``merchants`` treated (and as
    many control) merchants whose rate moved by ``extra_rate`` (1% before)."""

    def cohort(delta: float, prefix: str) -> list[sequential.MerchantAggregate]:
        return [
            sequential.MerchantAggregate(
                merchant=f"{prefix}{i}",
                baseline=sequential.Window(events=events * 10, failures=events // 10),
                current=sequential.Window(
                    events=events, failures=round(events * (0.01 + delta))
                ),
            )
            for i in range(merchants)
        ]

    return sequential.compare(
        metric="error_rate",
        treated=cohort(extra_rate, "t"),
        control=cohort(0.0, "c"),
        margin=0.01,
    ).as_dict()


def measure(rollout, check: str, compared: dict, **detail) -> None:
    """Record one compare run in the rollout's current phase, shaped as
    the controller records it."""
    rollout.refresh_from_db()
    row = rollout.checks.get(name=check)
    answer = compared["decision"]
    services.check_run_record(
        check_id=row.pk,
        phase_index=detail.pop("phase", rollout.current_phase),
        value=compared["estimate"],
        verdict=VERDICT_OF[answer],
        detail={
            "answer": answer,
            "comparison": compared,
            "note": "" if answer != "not_yet" else "needs more events",
            "message": compared["explanation"],
            **detail,
        },
    )


def advance(rollout, reason: str = "gates open") -> None:
    rollout.refresh_from_db()
    services.rollout_advance(
        rollout_id=rollout.pk,
        expected_phase=rollout.current_phase,
        actor=CONTROLLER,
        reason=reason,
        details={"decision": "advance"},
    )


HEALTHY = {"extra_rate": 0.0, "merchants": 40, "events": 2000}
WORSE = {"extra_rate": 0.04, "merchants": 10, "events": 2000}
UNSURE = {"extra_rate": 0.0, "merchants": 2, "events": 30}


def test_report__ten_percent_comparison_said_worse__never_proceed(rollout_factory):
    # Given: the case -- the 10% phase's comparison said worse, yet
    # the rollout went on (advanced by hand) and completed
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    measure(rollout, "errors", comparison(**UNSURE))
    advance(rollout)
    worse = comparison(**WORSE)
    assert worse["decision"] == "worse"
    measure(rollout, "errors", worse)
    measure(rollout, "errors", comparison(**HEALTHY))
    measure(rollout, "errors", worse)
    advance(rollout, reason="operator pushed on")
    measure(rollout, "errors", comparison(**HEALTHY))
    advance(rollout)
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert rollout.__class__.objects.get(pk=rollout.pk).status == "completed"
    assert report["verdict"] == ROLL_BACK
    assert "PROCEED" not in markdown and "## Verdict: ROLL BACK" in markdown
    (reason,) = report["reasons"]
    assert reason.startswith("phase 2 (10%): check errors said worse: estimate +")
    interval = (
        f"interval {metric_text('error_rate', worse['lower'])} to "
        f"{metric_text('error_rate', worse['upper'])}"
    )
    assert interval in reason and "margin +1.00 pp" in reason
    ten = report["evidence"][1]
    (entry,) = ten["checks"]
    assert (entry["answer"], entry["lower"], entry["upper"]) == (
        "worse",
        worse["lower"],
        worse["upper"],
    )
    assert entry["answers"] == {"worse": 2, "not_worse": 1, "not_yet": 0}
    assert ten["decision"] == "advance" and ten["decision_reason"] == (
        "operator pushed on"
    )


def test_report__every_prove_phase_not_worse__proceed_with_intervals(rollout_factory):
    # Given: the pilot (guard) never proved anything; both prove phases did
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    measure(rollout, "errors", comparison(**UNSURE))
    advance(rollout)
    healthy = comparison(**HEALTHY)
    assert healthy["decision"] == "not_worse"
    measure(rollout, "errors", comparison(**UNSURE))
    measure(rollout, "errors", healthy)
    advance(rollout)
    measure(rollout, "errors", healthy)
    advance(rollout)
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert report["verdict"] == PROCEED
    assert report["reasons"][0] == "all 3 phases completed"
    assert report["reasons"][1] == (
        "phase 1 (pilot), guard: left after its soak, no check said worse"
    )
    assert report["reasons"][2].startswith("phase 2 (10%), prove: errors not worse")
    pilot, ten, full = report["evidence"]
    assert [p["decision"] for p in report["evidence"]] == ["advance"] * 3
    assert pilot["checks"][0]["answer"] == "not_yet"
    assert ten["checks"][0]["estimate"] == healthy["estimate"]
    assert ten["checks"][0]["treated_merchants"] == 40
    row = (
        f"| errors | **not_worse** | {metric_text('error_rate', healthy['estimate'])} | "
        f"{metric_text('error_rate', healthy['lower'])} to "
        f"{metric_text('error_rate', healthy['upper'])} | margin +1.00 pp | "
        "40 treated / 80000 ev; 40 control / 80000 ev | 2 (0 / 1 / 1) | advance |"
    )
    assert row in markdown
    # One computation: no p-value and no second interval anywhere.
    assert "p = " not in markdown and "p_value" not in report_json(report)


def test_report__prove_phase_left_not_yet__fix_and_retest(rollout_factory):
    # Given: a prove phase left while its check still said not yet (by hand)
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    measure(rollout, "errors", comparison(**UNSURE))
    advance(rollout)
    measure(rollout, "errors", comparison(**UNSURE))
    advance(rollout, reason="skipped by hand")
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == FIX_AND_RETEST
    (reason,) = report["reasons"]
    assert reason.startswith(
        "phase 2 (10%) is a prove phase and was left (advance) while check errors "
        "said not_yet, not 'not worse'"
    )


def test_report__stale_run_after_advance__decision_answer_kept(rollout_factory):
    # Given: a not-yet measured for phase 1 but recorded after the advance
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    advance(rollout)
    measure(rollout, "errors", comparison(**HEALTHY))
    advance(rollout)
    measure(rollout, "errors", comparison(**UNSURE), phase=1)
    # When
    report = report_build(rollout)
    # Then: phase 1 advanced on not worse; the late run is shown, not used
    entry = report["evidence"][1]["checks"][0]
    assert (entry["answer"], entry["latest_answer"]) == ("not_worse", "not_yet")
    assert report["verdict"] == PROCEED
    assert report["evidence"][2]["decision"] == "wait"


def test_report__dry_run_check_worse__shown_never_decides(rollout_factory):
    # Given: the dry-run p95 check says worse, the deciding one not worse
    rollout = rollout_factory(
        started=True, phases=PHASES, checks=[ERRORS, {**P95, "dry_run": True}]
    )
    advance(rollout)
    measure(rollout, "errors", comparison(**HEALTHY))
    measure(rollout, "p95", comparison(**WORSE))
    advance(rollout)
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert report["verdict"] == PROCEED
    assert report["notes"][0].startswith("phase 2 (10%): dry-run check p95 said worse")
    assert "| p95 (dry run) | **worse** |" in markdown
    assert "none (dry run) |" in markdown


def test_report__old_run_without_answer__verdict_read_as_answer(rollout_factory):
    # Given: a threshold check's failing run, recorded before answers existed
    rollout = rollout_factory(started=True, phases=PHASES)
    row = rollout.checks.get()
    services.check_run_record(
        check_id=row.pk,
        phase_index=0,
        value=0.12,
        verdict="fail",
        detail={"message": "0.12 not < 0.05", "limit": 0.05},
    )
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == ROLL_BACK
    assert report["reasons"] == [
        "phase 1 (pilot): check error_rate said worse: value 0.12, threshold < 0.05 "
        "(0.12 not < 0.05)"
    ]
    assert report["evidence"][0]["checks"][0]["answer"] == "worse"


def test_report__controller_rollback__decision_cites_the_evidence(rollout_factory):
    # Given: the controller failed the 10% phase on a worse answer
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    advance(rollout)
    worse = comparison(**WORSE)
    measure(rollout, "errors", worse)
    services.rollout_fail_phase(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        reason="automatic rollback level 1: check errors failed",
        on_failure="rollback_1",
        details={
            "decision": "fail",
            "checks": [
                {"check": "errors", "answer": "worse", "estimate": worse["estimate"]}
            ],
        },
    )
    # When
    report = report_build(rollout)
    # Then
    ten = report["evidence"][1]
    assert ten["decision"] == "rollback"
    assert ten["decided_by"] == "controller:controller"
    assert ten["checks"][0]["cited_by_decision"]["estimate"] == worse["estimate"]
    assert report["verdict"] == ROLL_BACK
    assert report["reasons"][0].startswith("the rollout was rolled back at phase 2")
    assert report["evidence"][2]["reached"] is False
    assert report["evidence"][2]["decision"] is None


def test_report__paused_in_prove_phase__pause_decision_fix_and_retest(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    advance(rollout)
    measure(rollout, "errors", comparison(**UNSURE))
    services.rollout_pause(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        reason="automatic pause: max_duration passed; check errors needs more events",
    )
    # When
    report = report_build(rollout)
    # Then
    assert report["evidence"][1]["decision"] == "pause"
    assert report["verdict"] == FIX_AND_RETEST
    assert report["reasons"] == [
        "the rollout is paused: automatic pause: max_duration passed; check errors "
        "needs more events"
    ]
    assert "- errors: needs more events" in report_markdown(report)


def test_report__raw_cohort_totals_worse__context_only(rollout_factory, production):
    # Given: request totals look bad, the merchant-level comparison did not
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    now = timezone.now()
    OutcomeEvent.objects.bulk_create(
        OutcomeEvent(
            flag_key=rollout.flag.key,
            environment=production,
            merchant_key=f"m-{i % 5}",
            variation="on" if i % 2 else "off",
            outcome="failure" if i % 2 and i % 3 == 0 else "success",
            duration_ms=100.0,
            occurred_at=now - dt.timedelta(microseconds=i),
        )
        for i in range(600)
    )
    advance(rollout)
    measure(rollout, "errors", comparison(**HEALTHY))
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert report["verdict"] == PROCEED
    overall = report["cohorts"]["overall"]
    assert (
        overall["treatment"]["failures"] == 100 and overall["control"]["failures"] == 0
    )
    assert "verdict" not in overall and "p = " not in markdown
    assert "## Treatment vs control (context)" in markdown


def test_report__worse_recorded_after_advance__never_proceed(rollout_factory):
    # Given: a measurement of the 10% phase that came in after the advance
    # said worse (it crossed no limit: the phase was over), then completed
    rollout = rollout_factory(started=True, phases=PHASES, checks=[ERRORS])
    advance(rollout)
    measure(rollout, "errors", comparison(**HEALTHY))
    advance(rollout)
    measure(rollout, "errors", comparison(**WORSE), phase=1)
    measure(rollout, "errors", comparison(**HEALTHY))
    advance(rollout)
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == ROLL_BACK
    entry = report["evidence"][1]["checks"][0]
    assert (entry["answer"], entry["latest_answer"]) == ("not_worse", "worse")
