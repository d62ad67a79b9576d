"""manage.py simulate against a live server: real HTTP evaluations and
outcome events, the variation split the API serves, the injected regression,
and the past control traffic of ``--history`` that baselines come from."""

from __future__ import annotations

import datetime as dt
import socket
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from canary.baselines import merchant_baseline_capture
from canary.models import OutcomeEvent
from controlplane.apikeys.models import ApiKey
from controlplane.audit.actors import SYSTEM
from flags import engine, services
from flags.mappers import ruleset_compile
from tests.apikeys.fixtures import serving_reset  # noqa: F401

pytestmark = pytest.mark.slow


@pytest.fixture
def half_on(production, flag_factory, merchant_factory, serving_reset):  # noqa: F811
    """sequential_workflow serving ``on`` to 50% of 20 merchants."""
    for n in range(20):
        merchant_factory(f"m-{2000 + n}")
    flag = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=production, enabled=True
    )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=50
    )
    return flag


def test_simulate__live_server_regression_at_50__events_follow_served_variation(
    live_server, half_on, production
):
    # Given: every treatment outcome fails under the regression, none otherwise
    out = StringIO()
    # When
    call_command(
        "simulate",
        "--flag",
        "sequential_workflow",
        "--rate",
        "40",
        "--duration",
        "2",
        "--regression-at",
        "50",
        "--error-rate",
        "1",
        "--baseline-error-rate",
        "0",
        "--slowdown",
        "2",
        "--base-url",
        live_server.url,
        stdout=out,
    )
    # Then
    events = list(OutcomeEvent.objects.filter(environment=production))
    done = [line for line in out.getvalue().splitlines() if line.startswith("done: ")]
    assert done == [
        f"done: {len(events)} evaluations (off {sum(e.variation == 'off' for e in events)}"
        f", on {sum(e.variation == 'on' for e in events)}), "
        f"{sum(e.variation == 'on' for e in events)} failures reported"
    ]
    assert len(events) in (40, 80)  # 40 a second; a loaded machine may get through one
    ruleset = ruleset_compile(production)
    for event in events:
        expected = engine.evaluate(
            ruleset, "sequential_workflow", {"merchant": event.merchant_key}, False
        )
        assert event.variation == expected.variation
        assert event.outcome == ("failure" if event.variation == "on" else "success")
    on = [e for e in events if e.variation == "on"]
    off = [e for e in events if e.variation == "off"]
    assert on and off
    assert min(e.duration_ms for e in on) > 0
    text = out.getvalue()
    assert "created server key for production: cp_srv_" in text
    assert "treatment share 50%; regression ON" in text
    assert ApiKey.objects.filter(name="simulator", environment=production).count() == 1


def test_simulate__below_regression_share__baseline_only(
    live_server, half_on, production
):
    # Given: the regression waits for 100%; the baseline never fails
    out = StringIO()
    # When
    call_command(
        "simulate",
        "--flag",
        "sequential_workflow",
        "--rate",
        "20/s",
        "--duration",
        "1",
        "--regression-at",
        "100",
        "--error-rate",
        "1",
        "--baseline-error-rate",
        "0",
        "--base-url",
        live_server.url,
        stdout=out,
    )
    # Then
    assert OutcomeEvent.objects.count() >= 15
    assert not OutcomeEvent.objects.filter(outcome="failure").exists()
    assert "regression off" in out.getvalue()


def test_simulate__history__past_control_events_in_batches_no_evaluations(
    live_server, half_on, production, settings
):
    # Given: the server takes at most 50 events a POST; the flag serves `on`
    # to half the merchants right now
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "OUTCOME_EVENTS_MAX_BATCH": 50}
    out = StringIO()
    before = dt.datetime.now(dt.UTC)
    # When: 10 s of past traffic at 20/s, nothing live
    call_command(
        "simulate",
        "--flag",
        "sequential_workflow",
        "--rate",
        "20",
        "--history",
        "10",
        "--duration",
        "0",
        "--base-url",
        live_server.url,
        stdout=out,
    )
    after = dt.datetime.now(dt.UTC)
    # Then: 200 events, all on the control variation (no evaluation: half
    # would be `on`), spread over the 10 s before the command, in 4 batches
    events = list(OutcomeEvent.objects.filter(environment=production))
    assert len(events) == 200
    assert {e.variation for e in events} == {"off"}
    times = sorted(e.occurred_at for e in events)
    assert (
        before - dt.timedelta(seconds=10)
        <= times[0]
        < before - dt.timedelta(seconds=9.5)
    )
    assert before - dt.timedelta(seconds=0.5) < times[-1] <= after
    assert len({e.merchant_key for e in events}) == 20
    text = out.getvalue()
    assert "in batches of 50" in text
    assert "history done: 200 events (off 200)" in text
    assert "evaluated" not in text
    # ... and they are the look-back a rollout starting now takes its
    # merchants' baselines from
    baseline = merchant_baseline_capture(
        environment_key="production",
        flag_key="sequential_workflow",
        control_variation="off",
        now=after,
    )
    assert baseline["events"] == 200
    assert len(baseline["merchants"]) == 20


def test_simulate__duration_0_without_history__command_error(half_on):
    # Given / When / Then
    with pytest.raises(CommandError, match="--duration: 0 reports nothing"):
        call_command(
            "simulate",
            "--flag",
            "sequential_workflow",
            "--duration",
            "0",
            stdout=StringIO(),
        )


def test_simulate__server_not_running__one_line_command_error(half_on):
    # Given
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # When / Then
    with pytest.raises(CommandError, match="cannot reach .* is the server running"):
        call_command(
            "simulate",
            "--flag",
            "sequential_workflow",
            "--duration",
            "1",
            "--base-url",
            f"http://127.0.0.1:{port}",
            stdout=StringIO(),
        )


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flag", "ghost"], "ghost"),
        (["--flag", "sequential_workflow", "--rate", "0"], "--rate"),
        (["--flag", "sequential_workflow", "--error-rate", "1.5"], "--error-rate"),
        (["--flag", "sequential_workflow", "--history", "-1"], "--history"),
        (["--flag", "sequential_workflow", "--base-url", "ftp://x"], "--base-url"),
    ],
)
def test_simulate__bad_input__command_error(half_on, args, message):
    # Given / When / Then
    with pytest.raises(CommandError, match=message):
        call_command("simulate", *args, "--duration", "1", stdout=StringIO())


def test_simulate__two_flags_regression_flag__one_event_per_request_names_both(
    live_server, half_on, production, flag_factory
):
    # Given: a second flag serving `on` to half the merchants too; the
    # regression rides on the second flag's treatment only
    second = flag_factory("export_scheduling")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=second, environment=production, enabled=True
    )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=second, environment=production, percentage=50
    )
    out = StringIO()
    # When
    call_command(
        "simulate",
        "--flag",
        "sequential_workflow",
        "--flag",
        "export_scheduling",
        "--regression-flag",
        "export_scheduling",
        "--regression-at",
        "0",
        "--error-rate",
        "1",
        "--baseline-error-rate",
        "0",
        "--rate",
        "30",
        "--duration",
        "1",
        "--base-url",
        live_server.url,
        stdout=out,
    )
    # Then: every request is stored once per flag with what each served, and
    # a request failed exactly when export_scheduling served `on`
    rows = list(OutcomeEvent.objects.filter(environment=production))
    by_flag = {
        key: [r for r in rows if r.flag_key == key]
        for key in ("sequential_workflow", "export_scheduling")
    }
    assert len(by_flag["sequential_workflow"]) == len(by_flag["export_scheduling"]) > 0
    ruleset = ruleset_compile(production)
    for row in by_flag["export_scheduling"]:
        served = engine.evaluate(
            ruleset, "export_scheduling", {"merchant": row.merchant_key}
        ).variation
        assert row.variation == served
        assert (row.outcome == "failure") == (served == "on")
    for row in by_flag["sequential_workflow"]:
        served = engine.evaluate(
            ruleset, "sequential_workflow", {"merchant": row.merchant_key}
        ).variation
        assert row.variation == served
    assert "of export_scheduling" in out.getvalue()


def test_simulate__regression_flag_not_simulated__readable_error(live_server, half_on):
    # When / Then
    with pytest.raises(CommandError, match="--regression-flag: 'nope' is not one"):
        call_command(
            "simulate",
            "--flag",
            "sequential_workflow",
            "--regression-flag",
            "nope",
            "--base-url",
            live_server.url,
        )
