"""The verification window's decision rules (pure, no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from canary import verification as v

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
LATER = NOW + dt.timedelta(minutes=10)


def rules(**overrides) -> v.WindowRules:
    values = {
        "level": 1,
        "max_level": 3,
        "has_deployment": True,
        "auto_escalate": True,
        "until": LATER,
        "checks": ("errors", "p95"),
    }
    values.update(overrides)
    return v.WindowRules(**values)


def answers(**by_name: str) -> list[v.CheckAnswer]:
    return [
        v.CheckAnswer(
            name=name,
            answer=answer,
            comparison={
                "metric": "error_rate" if name == "errors" else "p95",
                "estimate": 0.02,
                "lower": 0.01,
                "upper": 0.03,
                "margin": 0.005,
                "treated_merchants": 4,
                "treated_events": 900,
            },
        )
        for name, answer in by_name.items()
    ]


@pytest.mark.parametrize(
    "given, overrides, now, action, level",
    [
        ({"errors": "worse", "p95": "not_yet"}, {}, NOW, v.ESCALATE, 2),
        ({"errors": "worse", "p95": "not_worse"}, {}, NOW, v.ESCALATE, 2),
        ({"errors": "worse"}, {"level": 2}, NOW, v.ESCALATE, 3),
        ({"p95": "worse"}, {"level": 3}, NOW, v.EXHAUSTED, 3),
        ({"errors": "worse"}, {"max_level": 1}, NOW, v.EXHAUSTED, 1),
        ({"errors": "worse"}, {"level": 2, "max_level": 2}, NOW, v.EXHAUSTED, 2),
        ({"errors": "worse"}, {"has_deployment": False}, NOW, v.EXHAUSTED, 1),
        ({"errors": "worse"}, {"auto_escalate": False}, NOW, v.STOPPED, 1),
        ({"errors": "not_worse", "p95": "not_worse"}, {}, NOW, v.RECOVERED, 1),
        ({"errors": "not_worse", "p95": "not_worse"}, {}, LATER, v.RECOVERED, 1),
        ({"errors": "not_worse"}, {}, NOW, v.WAIT, 1),
        ({"errors": "not_worse", "p95": "not_yet"}, {}, NOW, v.WAIT, 1),
        ({"errors": "not_worse", "p95": "not_yet"}, {}, LATER, v.ENDED, 1),
        ({}, {}, LATER, v.ENDED, 1),
        ({}, {}, NOW, v.WAIT, 1),
        # worse wins over the window's end
        ({"errors": "worse"}, {}, LATER, v.ESCALATE, 2),
        # a check that is not verified does not count
        ({"other": "worse"}, {}, NOW, v.WAIT, 1),
    ],
)
def test_verification_decide__table(given, overrides, now, action, level):
    # When
    decision = v.verification_decide(rules(**overrides), answers(**given), now)
    # Then
    assert (decision.action, decision.level) == (action, level)


def test_verification_decide__escalate__reason_has_values_margin_and_level():
    # When
    decision = v.verification_decide(
        rules(), answers(errors="worse", p95="not_yet"), NOW
    )
    # Then
    assert decision.reason.startswith(
        "automatic escalation to level 2 (deployment revert): after the level 1 "
        "(flag restore) rollback"
    )
    assert (
        "check errors worse: +2.00 pp [+1.00 pp, +3.00 pp] above margin 0.50 pp "
        "(4 merchants, 900 events)" in decision.reason
    )
    assert "the fault is not in the flag" in decision.reason
    errors = decision.checks[0]
    assert errors["estimate"] == 0.02 and errors["upper"] == 0.03
    assert errors["evidence"]["merchants"] == 4


def test_answer_text__latency__relative_percent():
    # Given
    item = answers(p95="not_worse")[0]
    # When
    text = v.answer_text(item)
    # Then
    assert text == (
        "check p95 not worse: +2.0% [+1.0%, +3.0%] below margin 0.5% "
        "(4 merchants, 900 events)"
    )


def test_answer_text__no_comparison__answer_and_note():
    # Given
    item = v.CheckAnswer(name="errors", answer="not_yet", note="needs 3x the events")
    # Then
    assert v.answer_text(item) == "check errors not yet (needs 3x the events)"
