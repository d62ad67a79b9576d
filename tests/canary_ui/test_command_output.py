"""Rollout command output a person reads: phases numbered from 1, passing
samples never above the number needed, a header on the rollout list."""

from __future__ import annotations

import io

import pytest
from django.core.management import call_command

from canary import services
from canary.models import CheckRun
from controlplane.audit.actors import SYSTEM
from controlplane.exceptions import Conflict
from tests.canary_ui.conftest import ERROR_RATE_CHECK, PHASES, record


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("rollout", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.strip()]


def test_rollout_list__started_then_advanced__header_and_phase_from_1(
    rollout_factory,
):
    # Given
    draft = rollout_factory(name="draft one")
    started = rollout_factory(started=True, name="started one")
    # When
    before = rows(run("list"))
    record(started, "pass", 0.01)
    services.rollout_advance(
        rollout_id=started.pk, expected_phase=0, actor=SYSTEM, reason="gates open"
    )
    after = rows(run("list"))
    # Then
    header = ["id", "status", "flag", "environment", "phase", "name"]
    assert before[0] == header and set(before[1][0]) == {"-"}
    assert before[2] == [str(started.pk), "running", "sequential_workflow"] + [
        "production",
        "1/4",
        "started",
        "one",
    ]
    assert before[3][:5] == [str(draft.pk), "draft", "sequential_workflow"] + [
        "production",
        "1/4",
    ]
    assert after[2][:5] == [str(started.pk), "running", "sequential_workflow"] + [
        "production",
        "2/4",
    ]


def test_rollout_list__none__says_so(db):
    # When / Then
    assert run("list") == "no rollouts\n"


def test_rollout_create__phases_table__numbered_from_1(flag, production, merchants):
    # When
    out = run(
        "create",
        "--flag",
        flag.key,
        "--template",
        "pilot-10-50-100",
        "--pilot",
        "m-1001",
        "--check",
        '{"name": "errors", "provider": "outcomes", "spec": {"metric":'
        ' "error_rate"}, "threshold": 0.05}',
    )
    # Then
    lines = rows(out)
    at = lines.index(["phase", "name", "target", "at", "least", "approval"])
    assert [row[:3] for row in lines[at + 2 : at + 6]] == [
        ["1", "pilot", "m-1001"],
        ["2", "10%", "10%"],
        ["3", "50%", "50%"],
        ["4", "100%", "100%"],
    ]
    checks = lines.index(
        ["check", "provider", "mode", "rule", "on", "failure"]
        + [
            "dry",
            "run",
        ]
    )
    assert lines[checks + 2] == [
        "errors",
        "outcomes",
        "absolute",
        "<",
        "0.05",
        "rollback_1",
        "-",
    ]


def test_rollout_status__three_passes_of_two_needed__two_of_two_and_leave_phase_1(
    rollout_factory,
):
    # Given: two passing samples needed, three recorded
    rollout = rollout_factory(
        started=True, checks=[{**ERROR_RATE_CHECK, "min_samples": 2}]
    )
    for _ in range(3):
        record(rollout, "pass", 0.01)
    # When
    out = run("status", str(rollout.pk))
    # Then
    assert "phase 1/4 (pilot)" in out
    assert "-> pass; passing, 2/2 passing samples" in out
    assert "3/2" not in out
    assert "  waiting: all gates open: leave phase 1" in out.splitlines()
    latest = CheckRun.objects.filter(rollout=rollout).order_by("-id").first()
    assert latest.detail["outcome"] == "pass (3 passing, 2 needed)"


def test_rollout_gate__first_phase_needs_approval__says_phase_1(rollout_factory):
    # Given
    phases = [{**PHASES[0], "requires_approval": True}, *PHASES[1:]]
    rollout = rollout_factory(started=True, phases=phases)
    record(rollout, "pass", 0.01)
    rollout.refresh_from_db()
    # When
    gate = services.rollout_gate(rollout=rollout)
    with pytest.raises(Conflict) as refused:
        services.rollout_advance(
            rollout_id=rollout.pk, expected_phase=0, actor=SYSTEM, reason="try"
        )
    # Then
    assert gate.reasons == ("phase 1 requires approval",)
    assert refused.value.message == "phase 1 (pilot) requires approval"
