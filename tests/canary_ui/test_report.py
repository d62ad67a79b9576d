"""The rollout report: phase timing, every check value against its threshold,
raw cohort totals as context, rollback actions and the verdict rules (the
compare-check evidence: test_report_evidence.py)."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from canary import services
from canary.models import OutcomeEvent, RolloutStatus
from canary.report import (
    FIX_AND_RETEST,
    PROCEED,
    ROLL_BACK,
    report_build,
)
from canary.report_text import report_json, report_markdown
from controlplane.audit.actors import SYSTEM
from tests.canary_ui.conftest import record, run_to_completion

Status = RolloutStatus


def outcomes(rollout, *, variation: str, n: int, failures: int, ms: float) -> None:
    now = timezone.now()
    OutcomeEvent.objects.bulk_create(
        [
            OutcomeEvent(
                flag_key=rollout.flag.key,
                environment=rollout.environment,
                merchant_key=f"m-{i % 7}",
                variation=variation,
                outcome="failure" if i < failures else "success",
                duration_ms=ms + (i % 10),
                occurred_at=now - dt.timedelta(microseconds=i),
            )
            for i in range(n)
        ]
    )


def test_report__completed_all_passing__proceed_with_timing(rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == PROCEED
    assert report["reasons"][0] == "all 4 phases completed"
    assert all(
        p["started_at"] and p["ended_at"] and p["duration_seconds"] is not None
        for p in report["phases"]
    )
    check = report["checks"][0]
    assert check["verdicts"]["pass"] == 4 and check["threshold"] == 0.05
    assert [run["phase"] for run in check["runs"]] == [0, 1, 2, 3]


def test_report__check_failed_and_rolled_back__roll_back_with_run_steps(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="gates open"
    )
    record(rollout, "fail", 0.12, message="0.12 not < 0.05")
    services.rollout_fail_phase(
        rollout_id=rollout.pk, actor=SYSTEM, reason="check error_rate failed"
    )
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert report["verdict"] == ROLL_BACK
    assert (
        "phase 2 (10%): check error_rate said worse: value 0.12, threshold < 0.05 "
        "(0.12 not < 0.05)" in report["reasons"]
    )
    assert [p["outcome"] for p in report["phases"]] == [
        "passed",
        "rolled back",
        "not reached",
        "not reached",
    ]
    (run,) = report["rollbacks"]
    assert run["level"] == 1 and run["steps"][0]["actuator"] == "flag_toggle"
    assert "## Verdict: ROLL BACK" in markdown
    assert (
        "| 2 | " in markdown
        and "| 0.12 | < 0.05 | fail | worse | - | 0.12 not < 0.05 |" in markdown
    )
    assert f"Rollback run {run['id']}: level 1" in markdown
    assert "`check.failed`" in markdown


def test_report__treatment_much_worse_in_outcomes__context_never_decides(
    rollout_factory,
):
    # Given: the check passes, but the raw outcome totals look worse
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    outcomes(rollout, variation="on", n=400, failures=60, ms=200)
    outcomes(rollout, variation="off", n=400, failures=4, ms=100)
    # When
    report = report_build(rollout)
    markdown = report_markdown(report)
    # Then: the verdict is the check's answer; the totals are shown as is
    assert report["verdict"] == PROCEED
    overall = report["cohorts"]["overall"]
    assert overall["treatment"] == {
        "n": 400,
        "failures": 60,
        "error_rate": 0.15,
        "merchants": 7,
    }
    assert overall["control"]["failures"] == 4
    assert report["cohorts"]["phases"][0]["comparison"]["treatment"]["n"] == 400
    assert (
        "- whole rollout: treatment 400 events from 7 merchants, 60 failed (15%)"
        in markdown
    )
    assert "confidence" not in markdown and "p = " not in markdown


def test_report__running_healthy__proceed_so_far(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == PROCEED
    assert report["reasons"] == [
        "in progress (running, phase 1 of 4): no check said worse so far"
    ]
    assert report["evidence"][0]["decision"] == "wait"


def test_report__inconclusive_check_paused__fix_and_retest(rollout_factory):
    # Given: inconclusive past its limit (3) turns the check inconclusive
    rollout = rollout_factory(started=True)
    for _ in range(4):
        record(rollout, "inconclusive", None, message="no data")
    services.rollout_pause(
        rollout_id=rollout.pk, actor=SYSTEM, reason="check error_rate is inconclusive"
    )
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == FIX_AND_RETEST
    assert any("is inconclusive" in r for r in report["reasons"])
    assert (
        "the rollout is paused: check error_rate is inconclusive" in report["reasons"]
    )


def test_report__aborted__fix_and_retest(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    services.rollout_abort(rollout_id=rollout.pk, actor=SYSTEM, reason="wrong flag")
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == FIX_AND_RETEST
    assert "the rollout was aborted before its phases completed" in report["reasons"]
    assert report["phases"][0]["outcome"] == "aborted"


def test_report__draft__fix_and_retest_nothing_measured(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    report = report_build(rollout)
    # Then
    assert report["verdict"] == FIX_AND_RETEST
    assert report["reasons"] == [
        "the rollout never started (status draft): nothing was measured"
    ]
    assert report["cohorts"]["overall"] is None
    assert report["cohorts"]["phases"] == []
    assert [p["reached"] for p in report["evidence"]] == [False] * 4


def test_report_json__roundtrip__same_verdict(rollout_factory):
    # Given
    import json

    rollout = run_to_completion(rollout_factory(started=True))
    # When
    data = json.loads(report_json(report_build(rollout)))
    # Then
    assert data["verdict"] == PROCEED and data["rollout"]["status"] == "completed"
    assert {d["action"] for d in data["decisions"]} >= {
        "rollout.created",
        "rollout.completed",
    }
