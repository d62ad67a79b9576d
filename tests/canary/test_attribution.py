"""canary.attribution: which members of a release a worse answer blames,
and the interaction test (pure, no database)."""

from __future__ import annotations

import pytest

from canary.attribution import PARTIAL, WHOLE, attribute, interaction
from canary.windows import MerchantAggregate, Window

ACTIVE = ["queue_ai_enrichment", "analytics_forecasting", "export_scheduling"]


@pytest.mark.parametrize(
    ("worse", "factorial", "interactions", "scope", "flags", "words"),
    [
        # one member worse in a split phase: only it
        (
            {"analytics_forecasting": ["error_rate"]},
            True,
            {},
            PARTIAL,
            ("analytics_forecasting",),
            "its own effect says worse",
        ),
        # two of three worse, no interaction: both, the third goes on
        (
            {"queue_ai_enrichment": ["error_rate"], "export_scheduling": ["p95"]},
            True,
            {},
            PARTIAL,
            ("queue_ai_enrichment", "export_scheduling"),
            "analytics_forecasting do not",
        ),
        # a pilot or 100% phase: the whole release
        (
            {"analytics_forecasting": ["error_rate"]},
            False,
            {},
            WHOLE,
            tuple(ACTIVE),
            "cannot be attributed",
        ),
        # everyone worse: the whole release
        (
            dict.fromkeys(ACTIVE, ["error_rate"]),
            True,
            {},
            WHOLE,
            tuple(ACTIVE),
            "no feature to keep",
        ),
        # a significant interaction with another member: the whole release
        (
            {"analytics_forecasting": ["error_rate"]},
            True,
            {
                "analytics_forecasting": {
                    "queue_ai_enrichment": {
                        "significant": True,
                        "testable": True,
                        "with": 0.05,
                        "without": 0.0,
                        "z": 4.2,
                    }
                }
            },
            WHOLE,
            tuple(ACTIVE),
            "depends on queue_ai_enrichment",
        ),
        # an untestable interaction: partial, and the reason says so
        (
            {"analytics_forecasting": ["error_rate"]},
            True,
            {
                "analytics_forecasting": {
                    "queue_ai_enrichment": {"significant": False, "testable": False}
                }
            },
            PARTIAL,
            ("analytics_forecasting",),
            "no interaction testable yet for analytics_forecastingxqueue_ai_enrichment",
        ),
    ],
)
def test_attribute__cases__scope_flags_and_reason(
    worse, factorial, interactions, scope, flags, words
):
    # When
    answer = attribute(
        active=ACTIVE,
        worse=worse,
        factorial=factorial,
        phase_text="phase 1 (pilot)",
        interactions=interactions,
    )
    # Then
    assert answer.scope == scope
    assert answer.flags == flags
    assert words in answer.reason


def test_attribute__last_member__whole():
    # When
    answer = attribute(
        active=["export_scheduling"],
        worse={"export_scheduling": ["error_rate"]},
        factorial=True,
        phase_text="phase 3 (50%)",
    )
    # Then
    assert answer.scope == WHOLE and answer.flags == ("export_scheduling",)


def _aggregates(
    prefix: str, count: int, current_rate: float
) -> list[MerchantAggregate]:
    return [
        MerchantAggregate(
            f"{prefix}-{i}",
            Window(events=4000, failures=40),  # baseline 1%
            Window(events=2000, failures=round(2000 * current_rate)),
        )
        for i in range(count)
    ]


def test_interaction__effect_only_with_other__significant():
    # Given: this flag's treated merchants fail 6% only when they also have
    # the other member's treatment, 1% otherwise; controls 1%
    treated_with = _aggregates("tw", 6, 0.06)
    treated_without = _aggregates("to", 6, 0.01)
    control_with = _aggregates("cw", 6, 0.01)
    control_without = _aggregates("co", 6, 0.01)
    other = {a.merchant for a in treated_with + control_with}
    # When
    answer = interaction(
        metric="error_rate",
        treated=treated_with + treated_without,
        control=control_with + control_without,
        other_treated=other,
        alpha=0.01,
    )
    # Then
    assert answer["testable"] and answer["significant"]
    assert answer["with"] == pytest.approx(0.05, abs=0.002)
    assert answer["without"] == pytest.approx(0.0, abs=0.002)
    assert answer["cells"] == {
        "treated_with": 6,
        "treated_without": 6,
        "control_with": 6,
        "control_without": 6,
    }


def test_interaction__same_effect_either_way__not_significant():
    # Given: +3 pp for this flag's treated merchants whatever the other serves
    treated = _aggregates("tw", 6, 0.04) + _aggregates("to", 6, 0.04)
    control = _aggregates("cw", 6, 0.01) + _aggregates("co", 6, 0.01)
    other = {a.merchant for a in treated[:6] + control[:6]}
    # When
    answer = interaction(
        metric="error_rate",
        treated=treated,
        control=control,
        other_treated=other,
        alpha=0.01,
    )
    # Then
    assert answer["testable"] and not answer["significant"]
    assert answer["with"] == pytest.approx(answer["without"], abs=0.002)


def test_interaction__a_cell_with_one_merchant__untestable():
    # Given: only one treated merchant has the other member's treatment
    treated = _aggregates("tw", 1, 0.06) + _aggregates("to", 6, 0.01)
    control = _aggregates("cw", 6, 0.01) + _aggregates("co", 6, 0.01)
    other = {a.merchant for a in treated[:1] + control[:6]}
    # When
    answer = interaction(
        metric="error_rate",
        treated=treated,
        control=control,
        other_treated=other,
        alpha=0.01,
    )
    # Then
    assert not answer["testable"] and not answer["significant"]
    assert answer["cells"]["treated_with"] == 1
