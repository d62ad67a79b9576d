"""manage.py rollout: every subcommand's happy path and its bad input."""

from __future__ import annotations

import json
import socket
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from canary.models import Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from flags.models import MerchantOverride
from tests.canary_ui.conftest import record, run_to_completion

Status = RolloutStatus


def run(*args: str) -> str:
    out = StringIO()
    call_command("rollout", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_rollout_create__template_and_check__draft_with_phases_and_check(
    flag, merchants
):
    # Given
    check = json.dumps(
        {
            "name": "errors",
            "provider": "outcomes",
            "spec": {"metric": "error_rate"},
            "threshold": 0.05,
        }
    )
    # When
    out = run(
        "create",
        "--flag",
        "sequential_workflow",
        "--env",
        "production",
        "--template",
        "pilot-10-50-100",
        "--pilot",
        "m-1001",
        "--check",
        check,
        "--duration-scale",
        "0.05",
    )
    # Then
    rollout = Rollout.objects.get()
    assert rollout.status == Status.DRAFT
    assert [p.name for p in rollout.phases.order_by("index")] == [
        "pilot",
        "10%",
        "50%",
        "100%",
    ]
    assert rollout.phases.get(index=0).pilot_merchants == ["m-1001"]
    assert rollout.phases.get(index=0).min_duration == 30  # 600 s * 0.05
    assert rollout.checks.get().name == "errors"
    assert f"rollout {rollout.pk} created" in out
    assert AuditEvent.objects.filter(
        action="rollout.created", target_id=str(rollout.pk)
    ).exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--template", "nope", "--pilot", "m-1001"], "unknown plan 'nope'"),
        (["--template", "pilot-10-50-100"], "pilot_merchants"),
        (
            ["--template", "pilot-10-50-100", "--pilot", "m-404"],
            "unknown merchant 'm-404'",
        ),
        (
            [
                "--template",
                "pilot-10-50-100",
                "--pilot",
                "m-1001",
                "--check",
                '{"name": "x"}',
            ],
            "checks[0].provider",
        ),
    ],
)
def test_rollout_create__bad_input__one_line_command_error(
    flag, merchants, args, message
):
    # Given / When
    with pytest.raises(CommandError) as error:
        run("create", "--flag", "sequential_workflow", *args)
    # Then
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not Rollout.objects.exists()


def test_rollout_create__check_not_json__usage_error(flag, merchants):
    # Given / When / Then: argparse refuses before anything runs
    with pytest.raises(CommandError, match="not valid JSON"):
        run(
            "create",
            "--flag",
            "sequential_workflow",
            "--template",
            "pilot-10-50-100",
            "--pilot",
            "m-1001",
            "--check",
            "{oops",
        )


def test_rollout_create__unknown_flag__command_error(production):
    # Given / When / Then
    with pytest.raises(CommandError, match="ghost"):
        run(
            "create",
            "--flag",
            "ghost",
            "--template",
            "pilot-10-50-100",
            "--pilot",
            "m-1",
        )


def test_rollout_start__preflight_passes__running_and_pilot_live(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When
    out = run("start", str(rollout.pk))
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING
    assert (
        MerchantOverride.objects.filter(merchant__key="m-1001").get().variation == "on"
    )
    assert "preflight: check error_rate answered" in out
    assert "running: phase 1 (pilot) is live" in out


def test_rollout_start__check_does_not_answer__refused_with_reason(rollout_factory):
    # Given: an http check against a port nobody listens on
    rollout = rollout_factory(
        checks=[
            {
                "name": "health",
                "provider": "http",
                "timeout": 2,
                "spec": {
                    "url": f"http://127.0.0.1:{closed_port()}/health",
                    "measure": "status",
                },
                "threshold": 500,
            }
        ]
    )
    # When
    with pytest.raises(CommandError) as error:
        run("start", str(rollout.pk))
    # Then
    assert "preflight refused: check health did not answer" in str(error.value)
    rollout.refresh_from_db()
    assert rollout.status == Status.DRAFT
    assert not MerchantOverride.objects.exists()


@pytest.mark.parametrize(
    "rollout_id, message",
    [("999", "unknown rollout 999"), ("abc", "'abc' is not a rollout id")],
)
def test_rollout_start__unknown_or_bad_id__command_error(db, rollout_id, message):
    # Given / When / Then
    with pytest.raises(CommandError, match=message):
        run("start", rollout_id)


def test_rollout_start__finished_rollout__command_error(rollout_factory):
    # Given
    rollout = rollout_factory()
    run("abort", str(rollout.pk), "--reason", "not now")
    # When / Then
    with pytest.raises(CommandError, match="cannot go from aborted to running"):
        run("start", str(rollout.pk))


def test_rollout_status__running__phase_checks_and_gate(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    record(rollout, "pass", 0.01)
    # When
    out = run("status", str(rollout.pk))
    # Then
    assert f"rollout {rollout.pk} 'ui test rollout': running, phase 1/4 (pilot)" in out
    assert (
        "check error_rate (outcomes): last 0.01 < 0.05 -> pass; passing, "
        "1/1 passing samples" in out
    )


def test_rollout_pause_resume__running__paused_then_running_with_audit(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    paused = run("pause", str(rollout.pk), "--reason", "lunch")
    rollout.refresh_from_db()
    pause_reason = rollout.pause_reason
    resumed = run("resume", str(rollout.pk))
    # Then
    rollout.refresh_from_db()
    assert "paused" in paused and pause_reason == "lunch"
    assert "running" in resumed and rollout.status == Status.RUNNING
    transitions = AuditEvent.objects.filter(
        action="rollout.transition", target_id=str(rollout.pk)
    ).order_by("id")
    assert [e.details["to"] for e in transitions][-2:] == ["paused", "running"]
    assert transitions.last().actor_type == "user"


def test_rollout_resume__not_paused_draft__command_error(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When / Then
    with pytest.raises(CommandError, match="cannot go from draft to running"):
        run("resume", str(rollout.pk))


def test_rollout_approve__awaiting_approval__running_and_approved(rollout_factory):
    # Given
    from canary import services
    from controlplane.audit.actors import SYSTEM

    rollout = rollout_factory(started=True)
    services.rollout_transition(
        rollout_id=rollout.pk,
        to=Status.AWAITING_APPROVAL,
        actor=SYSTEM,
        reason="phase 1 requires approval",
    )
    # When
    out = run("approve", str(rollout.pk), "--reason", "pilot looks good")
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.RUNNING and rollout.approved_phase == 0
    assert "approved at phase 1: running" in out
    assert (
        AuditEvent.objects.get(action="rollout.approved").details["reason"]
        == "pilot looks good"
    )


def test_rollout_approve__draft__command_error(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When / Then
    with pytest.raises(CommandError, match="cannot go from draft to approved"):
        run("approve", str(rollout.pk))


def test_rollout_abort__running__aborted_and_pilot_override_removed(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    assert MerchantOverride.objects.exists()
    # When
    out = run("abort", str(rollout.pk), "--reason", "wrong flag")
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.ABORTED
    assert not MerchantOverride.objects.exists()
    assert "flag state restored" in out


def test_rollout_fail_phase_and_rollback__running__rolling_back(rollout_factory):
    # Given
    first = rollout_factory(started=True)
    # When
    run("fail-phase", str(first.pk), "--reason", "support tickets")
    # Then
    first.refresh_from_db()
    assert first.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    assert (
        AuditEvent.objects.get(action="rollout.phase_failed").details["reason"]
        == "support tickets"
    )


def test_rollout_rollback__running__rolling_back_at_level_1(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    out = run("rollback", str(rollout.pk), "--level", "1", "--reason", "dashboards red")
    # Then
    rollout.refresh_from_db()
    assert rollout.status in (Status.ROLLING_BACK, Status.ROLLED_BACK)
    assert "(level 1)" in out
    event = AuditEvent.objects.filter(
        action="rollout.transition",
        target_id=str(rollout.pk),
        details__to="rolling_back",
    ).get()
    assert event.details["level"] == 1 and event.details["reason"] == "dashboards red"


def test_rollout_rollback__bad_level__usage_error(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When / Then
    with pytest.raises(CommandError, match="invalid choice: 4"):
        run("rollback", str(rollout.pk), "--level", "4")


def test_rollout_list__two_rollouts__both_listed_and_filtered(rollout_factory):
    # Given
    first = rollout_factory()
    run("abort", str(first.pk))
    rollout_factory(name="second")
    # When
    everything = run("list")
    drafts = run("list", "--status", "draft")
    # Then
    assert (
        f"{first.pk}" in everything
        and "aborted" in everything
        and "second" in everything
    )
    assert "second" in drafts and "aborted" not in drafts


def test_rollout_templates__lists_plans(db):
    # Given / When
    out = run("templates")
    # Then
    lines = out.splitlines()
    assert lines[0].split() == ["plan", "description"]
    assert any(line.startswith("pilot-10-50-100 ") for line in lines)
    assert any(line.startswith("demo-fast ") for line in lines)


def test_rollout_report__json__verdict_and_sections(rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    report = json.loads(run("report", str(rollout.pk), "--format", "json"))
    # Then
    assert report["verdict"] == "proceed"
    assert [p["outcome"] for p in report["phases"]] == ["passed"] * 4


def test_rollout_report__bad_format__usage_error(rollout_factory):
    # Given
    rollout = rollout_factory()
    # When / Then
    with pytest.raises(CommandError, match="invalid choice: 'pdf'"):
        run("report", str(rollout.pk), "--format", "pdf")


def test_rollout_watch__finished_rollout__exits_with_summary(rollout_factory):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    out = run("watch", str(rollout.pk), "--timeout", "5")
    # Then
    assert "rollout.completed" in out
    assert f"summary: rollout {rollout.pk} completed" in out
    assert "4/4 phases passed; verdict: proceed" in out


def test_rollout_watch__running_past_timeout__command_error_after_summary(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(started=True)
    out = StringIO()
    # When
    with pytest.raises(CommandError, match="watch timed out after 0.3s"):
        call_command(
            "rollout",
            "watch",
            str(rollout.pk),
            "--timeout",
            "0.3",
            "--interval",
            "0.1",
            stdout=out,
        )
    # Then
    text = out.getvalue()
    assert "running, phase 1/4 (pilot)" in text
    assert f"summary: rollout {rollout.pk} running" in text


@pytest.mark.parametrize(
    "subcommand",
    [
        "status",
        "approve",
        "pause",
        "resume",
        "abort",
        "fail-phase",
        "rollback",
        "report",
        "watch",
    ],
)
def test_rollout_subcommand__unknown_rollout__one_line_command_error(db, subcommand):
    # Given / When
    with pytest.raises(CommandError) as error:
        run(subcommand, "999")
    # Then
    assert str(error.value) == "unknown rollout 999"


@pytest.mark.parametrize(
    "subcommand, message",
    [
        ("abort", "cannot go from completed to aborted"),
        ("fail-phase", "cannot go from completed to failed"),
        ("pause", "cannot go from completed to paused"),
        ("rollback", "cannot go from completed to rolling_back"),
    ],
)
def test_rollout_subcommand__completed_rollout__refused_unchanged(
    rollout_factory, subcommand, message
):
    # Given
    rollout = run_to_completion(rollout_factory(started=True))
    # When
    with pytest.raises(CommandError, match=message):
        run(subcommand, str(rollout.pk), "--reason", "late")
    # Then
    rollout.refresh_from_db()
    assert rollout.status == Status.COMPLETED


def test_rollout_watch__rollback_run_failed__ends_with_command_error(rollout_factory):
    # Given: a rollback whose only step fails for good
    from rollback.models import RollbackRun
    from rollback.services import rollback_step_claim, rollback_step_finish

    rollout = rollout_factory(started=True)
    run("rollback", str(rollout.pk), "--level", "1", "--reason", "red")
    rollback_run = RollbackRun.objects.get(
        trigger="rollout", trigger_ref=str(rollout.pk)
    )
    claim = rollback_step_claim(run_id=rollback_run.pk)
    rollback_step_finish(
        claim=claim, succeeded=False, error="database gone", retryable=False
    )
    out = StringIO()
    # When
    with pytest.raises(CommandError, match="the rollback of rollout .* failed"):
        call_command("rollout", "watch", str(rollout.pk), "--timeout", "30", stdout=out)
    # Then
    text = out.getvalue()
    assert "rolling_back" in text
    assert f"rollback run {rollback_run.pk}: level 1, failed" in text
