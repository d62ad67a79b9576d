"""Pure check semantics and the phase gate: table-driven, no database."""

from __future__ import annotations

import ast
import datetime as dt
import math
import pathlib
import subprocess
import sys

import pytest

from canary import health
from canary.health import (
    CheckRules,
    CheckState,
    CheckStatus,
    GateAction,
    GateCheck,
    PhaseRules,
    Verdict,
    check_state_update,
    judge,
    phase_gate,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
T0 = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def test_health_module__imports__nothing_from_django_or_drf():
    # Given
    tree = ast.parse((ROOT / "canary" / "health.py").read_text())
    # When
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {
        node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
    }
    # Then
    assert not {
        name
        for name in imported
        if name.split(".")[0] in ("django", "rest_framework", "flags", "controlplane")
    }
    loaded = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, canary.health; print(any(m.split('.')[0] in ('django', 'rest_framework')"
            " for m in sys.modules))",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert loaded.stdout.strip() == "False", loaded.stderr


@pytest.mark.parametrize(
    ("rules", "kwargs", "verdict"),
    [
        (CheckRules(comparator="lt", threshold=200), {"value": 150.0}, Verdict.PASS),
        (CheckRules(comparator="lt", threshold=200), {"value": 200.0}, Verdict.FAIL),
        (CheckRules(comparator="lte", threshold=200), {"value": 200.0}, Verdict.PASS),
        (CheckRules(comparator="gt", threshold=0.8), {"value": 0.9}, Verdict.PASS),
        (CheckRules(comparator="gte", threshold=0.8), {"value": 0.79}, Verdict.FAIL),
        (CheckRules(comparator="eq", threshold=264), {"value": 264.0}, Verdict.PASS),
        (CheckRules(comparator="eq", threshold=0), {"value": 3.0}, Verdict.FAIL),
        # no data: inconclusive by default, a failure where the check says so
        (CheckRules(threshold=1), {"value": None}, Verdict.INCONCLUSIVE),
        (CheckRules(threshold=1, no_data="fail"), {"value": None}, Verdict.FAIL),
        (CheckRules(threshold=1), {"value": 0.0, "samples": 0}, Verdict.INCONCLUSIVE),
        (CheckRules(threshold=1), {"value": math.nan}, Verdict.INCONCLUSIVE),
        # a provider error is an error, never a pass
        (CheckRules(threshold=1), {"value": 0.0, "error": "timeout"}, Verdict.ERROR),
        (CheckRules(threshold=None), {"value": 0.0}, Verdict.ERROR),
        # relative: lt allows up to baseline * 1.2, gt down to baseline * 0.8
        (
            CheckRules(mode="relative", comparator="lt", relative_tolerance=0.2),
            {"value": 119.0, "baseline": 100.0},
            Verdict.PASS,
        ),
        (
            CheckRules(mode="relative", comparator="lt", relative_tolerance=0.2),
            {"value": 121.0, "baseline": 100.0},
            Verdict.FAIL,
        ),
        (
            CheckRules(mode="relative", comparator="gt", relative_tolerance=0.2),
            {"value": 0.81, "baseline": 1.0},
            Verdict.PASS,
        ),
        (
            CheckRules(mode="relative", comparator="gt", relative_tolerance=0.2),
            {"value": 0.79, "baseline": 1.0},
            Verdict.FAIL,
        ),
        (
            CheckRules(mode="relative", comparator="eq", relative_tolerance=0.1),
            {"value": 95.0, "baseline": 100.0},
            Verdict.PASS,
        ),
        (
            CheckRules(mode="relative"),
            {"value": 1.0, "baseline": None},
            Verdict.INCONCLUSIVE,
        ),
        # cohort: the comparison's verdict, no comparison = no data
        (
            CheckRules(mode="cohort"),
            {"value": 0.1, "cohort": {"verdict": "fail"}},
            Verdict.FAIL,
        ),
        (
            CheckRules(mode="cohort"),
            {"value": 0.1, "cohort": {"verdict": "inconclusive"}},
            Verdict.INCONCLUSIVE,
        ),
        (
            CheckRules(mode="cohort"),
            {"value": None, "cohort": None},
            Verdict.INCONCLUSIVE,
        ),
        (CheckRules(mode="cohort", no_data="fail"), {"value": None}, Verdict.FAIL),
    ],
)
def test_judge__measurement__expected_verdict(rules, kwargs, verdict):
    # When
    judgement = judge(rules, **kwargs)
    # Then
    assert judgement.verdict == verdict
    assert judgement.message


def test_judge__relative_failure__message_names_value_limit_and_baseline():
    # When
    judgement = judge(
        CheckRules(mode="relative", comparator="lt", relative_tolerance=0.2),
        value=130.0,
        baseline=100.0,
    )
    # Then
    assert judgement.limit == pytest.approx(120.0)
    assert judgement.message == "130 not < 120 (baseline 100, beyond 20% tolerance)"


def _run(rules: CheckRules, verdicts: list[str]) -> list[health.CheckOutcome]:
    state, outcomes = CheckState(), []
    for verdict in verdicts:
        outcome = check_state_update(rules, state, verdict)
        outcomes.append(outcome)
        state = outcome.state
    return outcomes


@pytest.mark.parametrize(
    ("rules", "verdicts", "statuses"),
    [
        # failure_limit 0: the first failure fails the check
        (CheckRules(failure_limit=0), ["fail"], ["failed"]),
        # failure_limit 2: the third consecutive failure fails it
        (
            CheckRules(failure_limit=2),
            ["fail", "fail", "fail"],
            ["pending", "pending", "failed"],
        ),
        # a pass resets the consecutive failures
        (
            CheckRules(failure_limit=1),
            ["fail", "pass", "fail", "pass"],
            ["pending", "passing", "pending", "passing"],
        ),
        # failed sticks for the rest of the phase
        (
            CheckRules(failure_limit=0),
            ["fail", "pass", "pass"],
            ["failed", "failed", "failed"],
        ),
        # inconclusive results exceeding the limit (counted over the phase)
        (
            CheckRules(inconclusive_limit=1),
            ["inconclusive", "pass", "inconclusive"],
            ["pending", "passing", "inconclusive"],
        ),
        # consecutive errors exceeding the limit; a pass in between resets them
        (
            CheckRules(consecutive_error_limit=1),
            ["error", "pass", "error", "error"],
            ["pending", "passing", "pending", "errored"],
        ),
        # passing only after min_samples passes
        (
            CheckRules(min_samples=3),
            ["pass", "pass", "pass"],
            ["pending", "pending", "passing"],
        ),
        # an error or inconclusive result under its limit holds (not passing)
        (
            CheckRules(min_samples=1),
            ["pass", "error", "pass", "inconclusive"],
            ["passing", "pending", "passing", "pending"],
        ),
        # a failure outranks a sticky inconclusive
        (
            CheckRules(inconclusive_limit=0, failure_limit=0),
            ["inconclusive", "fail"],
            ["inconclusive", "failed"],
        ),
    ],
)
def test_check_state_update__verdict_sequence__expected_statuses(
    rules, verdicts, statuses
):
    # When
    outcomes = _run(rules, verdicts)
    # Then
    assert [o.state.status for o in outcomes] == statuses


def test_check_state_update__limit_crossed__reported_once_with_explanation():
    # When
    outcomes = _run(CheckRules(failure_limit=2), ["fail", "fail", "fail", "fail"])
    # Then
    assert [o.crossed for o in outcomes] == [None, None, "failed", None]
    assert (
        outcomes[2].message
        == "failed: 3 consecutive failure(s) exceed the failure limit 2"
    )


def test_check_state_update__errors__retried_sooner_with_backoff_capped_at_interval():
    # When
    outcomes = _run(
        CheckRules(interval=40, consecutive_error_limit=9), ["error"] * 4 + ["pass"]
    )
    # Then
    assert [o.next_delay for o in outcomes] == [10.0, 20.0, 40.0, 40.0, 40.0]


def test_check_state_update__unknown_verdict__value_error():
    # When / Then
    with pytest.raises(ValueError):
        check_state_update(CheckRules(), CheckState(), "maybe")


def _gate(
    *checks: GateCheck, elapsed: float = 600, approved: bool = False, **phase: object
) -> health.GateDecision:
    rules = PhaseRules(index=1, **{"min_duration": 300, **phase})
    return phase_gate(T0 + dt.timedelta(seconds=elapsed), rules, T0, checks, approved)


PASSING = CheckState(status=CheckStatus.PASSING, pass_count=3)


@pytest.mark.parametrize(
    ("checks", "kwargs", "action"),
    [
        ([GateCheck("p95", PASSING, min_samples=3)], {}, GateAction.ADVANCE),
        ([], {}, GateAction.ADVANCE),
        ([GateCheck("p95", PASSING, min_samples=3)], {"elapsed": 299}, GateAction.HOLD),
        # too few passing samples: waits, does not pass
        (
            [
                GateCheck(
                    "p95", CheckState(CheckStatus.PENDING, pass_count=2), min_samples=3
                )
            ],
            {},
            GateAction.HOLD,
        ),
        # the latest result was not a pass (error under its limit): hold
        (
            [
                GateCheck(
                    "p95",
                    CheckState(CheckStatus.PENDING, pass_count=3, consecutive_errors=1),
                    min_samples=3,
                )
            ],
            {},
            GateAction.HOLD,
        ),
        (
            [GateCheck("p95", PASSING, min_samples=3)],
            {"requires_approval": True},
            GateAction.AWAIT_APPROVAL,
        ),
        (
            [GateCheck("p95", PASSING, min_samples=3)],
            {"requires_approval": True, "approved": True},
            GateAction.ADVANCE,
        ),
        (
            [GateCheck("p95", CheckState(CheckStatus.INCONCLUSIVE))],
            {},
            GateAction.PAUSE,
        ),
        ([GateCheck("p95", CheckState(CheckStatus.ERRORED))], {}, GateAction.PAUSE),
        (
            [GateCheck("p95", CheckState(CheckStatus.PENDING), min_samples=1)],
            {"max_duration": 500},
            GateAction.PAUSE,
        ),
        # max_duration does not stop a phase that is ready
        (
            [GateCheck("p95", PASSING, min_samples=1)],
            {"max_duration": 500},
            GateAction.ADVANCE,
        ),
        ([GateCheck("p95", CheckState(CheckStatus.FAILED))], {}, GateAction.FAIL),
    ],
)
def test_phase_gate__situation__expected_action(checks, kwargs, action):
    # When
    decision = _gate(*checks, **kwargs)
    # Then
    assert decision.action == action
    assert decision.reasons


def test_phase_gate__failed_and_errored__fail_with_most_severe_on_failure():
    # Given
    checks = [
        GateCheck("a", CheckState(CheckStatus.FAILED), on_failure="pause"),
        GateCheck("b", CheckState(CheckStatus.FAILED), on_failure="rollback_2"),
        GateCheck("c", CheckState(CheckStatus.ERRORED), on_failure="rollback_3"),
    ]
    # When
    decision = _gate(*checks)
    # Then
    assert (decision.action, decision.on_failure, decision.checks) == (
        GateAction.FAIL,
        "rollback_2",
        ("a", "b"),
    )


def test_phase_gate__holding__reasons_say_what_is_missing():
    # When
    decision = _gate(
        GateCheck("p95", CheckState(CheckStatus.PENDING, pass_count=1), min_samples=3),
        elapsed=120,
    )
    # Then
    assert decision.reasons == (
        "min_duration: 120s of 300s elapsed",
        "check p95: 1 of 3 passing samples",
    )
    assert decision.remaining == 180
