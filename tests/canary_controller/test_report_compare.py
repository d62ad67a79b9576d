"""The report of rollouts the real controller ran with compare checks.

End to end (issue 9, item 8): outcome events through the ingestion
service, ``controller_tick`` on a FakeClock (the fleet and loop of
test_compare.py), then ``report_build``. The verdict must be the
controller's own answers and decisions, with the same numbers.
"""

from __future__ import annotations

from canary import clock
from canary.models import CheckRun, RolloutStatus
from canary.report import FIX_AND_RETEST, PROCEED, ROLL_BACK, report_build
from canary.report_text import report_markdown
from tests.canary_controller.test_compare import (  # noqa: F401 (fixture)
    START,
    Fleet,
    _events,
    _run,
    fleet_merchants,
)

Status = RolloutStatus


def test_report__controller_completed_healthy__proceed_with_its_numbers(
    production, fleet_merchants, rollout_factory
):
    # Given: the controller completed a healthy rollout
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = _run(Fleet(production), rollout_factory, fake)
        # When
        report = report_build(rollout)
    # Then
    assert rollout.status == Status.COMPLETED
    assert report["verdict"] == PROCEED
    assert [p["decision"] for p in report["evidence"]] == ["advance"] * 3
    advanced = _events(rollout, "rollout.phase_advanced")
    prove = report["evidence"][1]
    (entry,) = prove["checks"]
    cited = advanced[1].details["checks"][0]
    # The numbers the controller advanced on, not a second computation
    run = CheckRun.objects.get(pk=entry["check_run"])
    assert entry["answer"] == run.detail["answer"] == cited["answer"] == "not_worse"
    assert (entry["estimate"], entry["lower"], entry["upper"]) == (
        run.detail["comparison"]["estimate"],
        run.detail["comparison"]["lower"],
        run.detail["comparison"]["upper"],
    )
    assert entry["upper"] == cited["upper"] < entry["margin"]
    assert entry["cited_by_decision"] == cited
    # ... and what each phase could detect with the baselines captured
    detectable = report["detectable"]
    assert detectable["baseline"]["source"] == "merchant_baseline"
    assert detectable["baseline"]["merchants"] == 40
    assert [p["treated_merchants"] for p in detectable["phases"]] == [1, 20, 40]
    assert "## What each phase could detect" in report_markdown(report)
    assert any(
        r.startswith("phase 2 (50%), prove: error_rate not worse")
        for r in report["reasons"]
    )


def test_report__controller_rolled_back_regression__roll_back_never_proceed(
    production, fleet_merchants, rollout_factory
):
    # Given: the treatment adds 10 points of errors; the controller rolled back
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = _run(Fleet(production, extra=0.10), rollout_factory, fake)
        # When
        report = report_build(rollout)
    markdown = report_markdown(report)
    # Then
    assert rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    assert report["verdict"] == ROLL_BACK and "PROCEED" not in markdown
    (failed,) = _events(rollout, "rollout.phase_failed")
    phase = report["evidence"][failed.details["phase"]]
    assert phase["decision"] == "rollback"
    (entry,) = phase["checks"]
    assert entry["answer"] == "worse"
    assert entry["cited_by_decision"]["lower"] == entry["lower"]
    assert any(
        r.startswith(
            f"phase {phase['index'] + 1} ({phase['name']}): check error_rate said worse"
        )
        for r in report["reasons"]
    )


def test_report__controller_paused_prove_phase__fix_and_retest(
    production, fleet_merchants, rollout_factory
):
    # Given: too little traffic: the prove phase paused at max_duration
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        rollout = _run(
            Fleet(production), rollout_factory, fake, per_minute=0.05, max_duration=600
        )
        # When
        report = report_build(rollout)
    # Then
    assert rollout.status == Status.PAUSED
    assert report["verdict"] == FIX_AND_RETEST
    prove = report["evidence"][1]
    assert prove["decision"] == "pause"
    assert prove["checks"][0]["answer"] == "not_yet"
    assert "max_duration" in prove["decision_reason"]
