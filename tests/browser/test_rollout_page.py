"""The rollout page in a real browser, offline: its charts carry one point
per check run with the runs' values, the report is rendered HTML, and
abort asks before it goes.

Rollouts are built through the services (threshold runs recorded one by
one) or run by the real controller on a fake clock with outcome events
(the fleet of tests/canary_controller/test_compare.py) for the
screenshots docs/img/rollout.png and docs/img/home.png.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from canary import services
from canary.controller import controller_tick
from canary.models import CheckRun, Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM
from tests.canary_controller.test_compare import (
    FLEET,
    LOOKBACK,
    Fleet,
    compare_check,
    phases,
)
from tests.canary_ui.conftest import ERROR_RATE_CHECK, PHASES, record

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

Status = RolloutStatus
# canary.charts.check_svg: serie-1..3 are the runs by answer, serie-4 the
# runs without a value.
RUN_DOTS = ".serie-1 .dots, .serie-2 .dots, .serie-3 .dots"
NO_VALUE_DOTS = ".serie-4 .dots"


@pytest.fixture
def flag(production, flag_factory):
    return flag_factory("sequential_workflow", value_type="bool")


def _threshold_rollout(flag, production, merchant_factory) -> Rollout:
    for key in ("m-1001", "m-1002", "m-1003"):
        merchant_factory(key)
    rollout = services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        name="browser rollout",
        phases=PHASES,
        checks=[ERROR_RATE_CHECK],
    )
    return services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)


def _controller_rollout(flag, production, merchant_factory) -> Rollout:
    """Run a healthy rollout with a compare check through the real
    controller in real time (the audit log's times are the wall clock's),
    with a short pilot, 50% and 100% phases, until it is some runs into its
    100% phase; return it still running."""
    import time

    for key in FLEET:
        merchant_factory(key)
    fleet = Fleet(production)
    start = timezone.now()
    fleet.report(start - dt.timedelta(seconds=LOOKBACK), start, per_minute=2)
    rollout = services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        name="sequential_workflow: pilot -> 50% -> 100%",
        phases=[
            {**phase, "min_duration": seconds, "max_duration": 600}
            for phase, seconds in zip(phases(), (12, 20, 10), strict=True)
        ],
        checks=[compare_check(interval=2)],
    )
    services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    before, deadline = start, time.monotonic() + 150
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = timezone.now()
        fleet.report(before, now, per_minute=240)
        before = now
        controller_tick()
        rollout.refresh_from_db()
        last = rollout.phases.count() - 1
        if rollout.status != Status.RUNNING or (
            rollout.current_phase == last
            and CheckRun.objects.filter(rollout=rollout, phase_index=last).count() >= 4
        ):
            break
    return rollout


def test_rollout_page__check_chart__one_point_per_run_with_its_value(
    page, admin_user, flag, production, merchant_factory
):
    # Given: a rollout with three runs in phase 1, an advance, two in phase 2
    rollout = _threshold_rollout(flag, production, merchant_factory)
    for value in (0.011, 0.022, 0.033):
        record(rollout, "pass", value)
    services.rollout_advance(
        rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="gates open"
    )
    for value in (0.044, 0.015):
        record(rollout, "pass", value)
    runs = list(CheckRun.objects.filter(rollout=rollout).order_by("measured_at", "id"))
    measured = [run for run in runs if run.value is not None]
    # (the start's own tick measured once, without outcome events: no value)
    assert len(measured) == 5 and len(runs) - len(measured) == 1
    # When
    page.login()
    page.get(f"/admin/canary/rollout/{rollout.pk}/change/")
    chart = page.wait_for("#chart-check-0 svg")
    # Then: one dot per measured run (serie-1..3, by answer) with its value,
    # and the run without a value has its grey dot on the threshold line
    assert len(chart.find_elements("css selector", RUN_DOTS)) == 5
    values = page.browser.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]))"
        ".map(d => d.querySelector('desc.value').textContent)",
        RUN_DOTS.replace(".serie", "#chart-check-0 .serie"),
    )
    shown = sorted(float(v.split(":")[-1].strip()) for v in values)
    assert shown == pytest.approx(sorted(run.value for run in measured))
    assert len(chart.find_elements("css selector", NO_VALUE_DOTS)) == 1
    # ... the threshold is drawn, the advance is marked, the x axis names
    # the phases 1-based
    text = chart.get_attribute("innerHTML")
    assert "threshold &lt; 0.05" in text or "threshold < 0.05" in text
    assert "advance, phase 1: gates open" in text  # the marker's label
    assert "phase 1 (pilot)" in text and "phase 2 (10%)" in text
    assert "phase 0" not in text
    # ... and the treatment share steps from the pilot to 10%
    share = page.css("#chart-share svg").get_attribute("innerHTML")
    assert "phase 2 (10%): 10%" in share


def test_report_page__rendered_html_not_markdown(
    page, admin_user, flag, production, merchant_factory
):
    # Given: a rollout rolled back after a failing run
    rollout = _threshold_rollout(flag, production, merchant_factory)
    record(rollout, "fail", 0.2, message="0.2 not < 0.05")
    services.rollout_fail_phase(
        rollout_id=rollout.pk, actor=SYSTEM, reason="check failed"
    )
    # When
    page.login()
    page.get(f"/admin/canary/rollout/{rollout.pk}/report/")
    verdict = page.wait_for("#report-verdict")
    # Then: headings and tables, no Markdown markup, the verdict in red
    assert verdict.tag_name == "h2" and "ROLL BACK" in verdict.text
    assert page.css("#report-verdict .tone").value_of_css_property(
        "background-color"
    ) == ("rgba(251, 224, 224, 1)")
    assert page.css("h1.report-title").text.startswith(f"Rollout {rollout.pk}")
    rows = page.all("#report-phases tbody tr")
    assert [r.find_element("css selector", "td").text for r in rows] == [
        "1",
        "2",
        "3",
        "4",
    ]
    body = page.css("#report").text
    assert "## " not in body and "|---|" not in body and "**" not in body
    assert "Phase 1 (pilot, prove)" in body
    assert page.all("#report table.report-runs tbody tr")
    # ... and Markdown and JSON are still there to download
    assert page.css("#report-markdown").get_attribute("href").endswith("report.md")
    assert page.css("#report-json").get_attribute("href").endswith("report.json")
    page.shot("report")


def test_abort__asks_for_confirmation_then_aborts(
    page, admin_user, flag, production, merchant_factory
):
    # Given
    rollout = _threshold_rollout(flag, production, merchant_factory)
    page.login()
    page.get(f"/admin/canary/rollout/{rollout.pk}/change/")
    abort = page.wait_for("a.rollout-action.danger[href$='/do/abort/']")
    assert abort.value_of_css_property("background-color") == "rgba(186, 33, 33, 1)"
    abort.click()
    page.wait_for("input[name=reason]").send_keys("not today")
    button = page.css("input[type=submit].danger")
    # When: the first confirmation is dismissed, the second accepted
    button.click()
    alert = page.browser.switch_to.alert
    assert f"Abort: rollout {rollout.pk}" in alert.text
    alert.dismiss()
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING
    button.click()
    page.accept_confirm()
    page.wait_for(".messagelist")
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.ABORTED


def test_screenshots__rollout_page_and_home(
    page, admin_user, flag, production, merchant_factory
):
    # Given: the controller ran a healthy rollout into its 100% phase
    rollout = _controller_rollout(flag, production, merchant_factory)
    assert rollout.status == Status.RUNNING and rollout.current_phase == 2
    runs = CheckRun.objects.filter(rollout=rollout).count()
    # When
    page.login()
    page.get(f"/admin/canary/rollout/{rollout.pk}/change/")
    page.wait_for("#chart-check-0 svg")
    # Then: one dot per run (measured, or without a value); no Save button
    chart = page.css("#chart-check-0")
    dots = chart.find_elements("css selector", f"{RUN_DOTS}, {NO_VALUE_DOTS}")
    assert len(dots) == runs
    assert not page.all("input[name=_save]")
    # The console's look without the app list: the page's own width.
    page.css("#toggle-nav-sidebar").click()
    page.browser.execute_script("window.scrollTo(0, 0)")
    width = page.browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 1400, f"the page scrolls sideways at 1400 px: {width}"
    page.shot("rollout")
    page.get("/")
    page.wait_for("#home-rollouts")
    page.shot("home")


def test_lists__readable_at_1400_px__no_sideways_scroll(
    page, admin_user, flag, production, merchant_factory
):
    # Given: a rollout paused with a long reason, and its check runs
    rollout = _threshold_rollout(flag, production, merchant_factory)
    for value in (0.011, 0.3):
        record(rollout, "pass" if value < 0.05 else "fail", value, message="x " * 80)
    services.rollout_pause(
        rollout_id=rollout.pk, actor=SYSTEM, reason="the error rate went up " * 12
    )
    page.login()
    for path in (
        "/admin/canary/rollout/",
        "/admin/canary/checkrun/",
        "/admin/rollback/rollbackrun/",
        f"/admin/canary/rollout/{rollout.pk}/change/",
    ):
        # When
        page.get(path)
        page.wait_for("#content")
        # Then: the app list stays open and nothing is cut off at the side
        width = page.browser.execute_script(
            "return document.documentElement.scrollWidth"
        )
        assert width <= 1400, f"{path} scrolls sideways at 1400 px: {width}"
        # ... and a list shows its last column without its own scroll bar
        cut = page.browser.execute_script(
            "const r = document.querySelector('.results');"
            "return r ? r.scrollWidth - r.clientWidth : 0"
        )
        assert cut <= 1, f"{path}: {cut} px of the list are cut off at 1400 px"
    page.get("/admin/canary/rollout/")
    page.shot("rollout-list")
