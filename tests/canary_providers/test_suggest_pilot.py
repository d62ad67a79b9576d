"""``manage.py merchants suggest-pilot`` on synthetic outcome events."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from canary.services.outcomes import outcome_events_ingest, pilot_candidates_suggest

FLAG = "sequential_workflow"


def _report(
    merchant: str,
    *,
    events: int,
    failures: int,
    days: int = 7,
    flag: str = FLAG,
    age: timedelta = timedelta(0),
) -> None:
    now = timezone.now() - age
    outcome_events_ingest(
        environment="production",
        events=[
            {
                "flag": flag,
                "merchant": merchant,
                "variation": "off",
                "outcome": "failure" if index < failures else "success",
                "duration_ms": 20.0 + index % 5,
                "occurred_at": (
                    now - timedelta(days=index % days, minutes=1)
                ).isoformat(),
            }
            for index in range(events)
        ],
    )


@pytest.fixture
def activity(production, flag_factory, merchant_factory):
    """Merchants with known volume and success over the last week."""
    flag_factory(FLAG, value_type="bool")
    merchant_factory("m-dormant-flagged", is_active=False)
    _report("m-median", events=100, failures=2)  # 98%, 1.0x median -> best
    _report("m-near", events=120, failures=2)  # 98.3%, 1.2x
    _report("m-flaky", events=100, failures=25)  # 75%: excluded
    _report("m-half", events=50, failures=0, days=3)  # 100%, 0.5x, 3 days
    _report("m-giant", events=1000, failures=10)  # 10x median: excluded
    _report("m-tiny", events=5, failures=0)  # too few: excluded
    _report("m-old", events=100, failures=0, age=timedelta(days=9))  # outside window
    _report("m-dormant-flagged", events=100, failures=0)  # inactive merchant
    _report("m-other-flag", events=100, failures=0, flag="other_flag")


def test_pilot_candidates_suggest__synthetic_events__ranked_as_documented(activity):
    # When
    suggestion = pilot_candidates_suggest(flag_key=FLAG, environment_key="production")
    # Then
    assert [pick.merchant for pick in suggestion.picks] == [
        "m-median",
        "m-near",
        "m-half",
    ]
    assert suggestion.basis == "flag"
    assert suggestion.merchants_seen == 7
    assert suggestion.median_events == 100
    why_not = {item.merchant: " ".join(item.reasons) for item in suggestion.excluded}
    assert set(why_not) == {"m-flaky", "m-giant", "m-tiny", "m-dormant-flagged"}
    assert "75.0% is not above 80%" in why_not["m-flaky"]
    assert "too big" in why_not["m-giant"]
    assert "too little traffic" in why_not["m-tiny"]
    assert "inactive" in why_not["m-dormant-flagged"]
    best = suggestion.picks[0]
    assert (best.events, best.failures, best.active_days) == (100, 2, 7)
    assert best.success_rate == pytest.approx(0.98)


def test_pilot_candidates_suggest__limit__top_n(activity):
    # When
    suggestion = pilot_candidates_suggest(
        flag_key=FLAG, environment_key="production", limit=1
    )
    # Then
    assert [pick.merchant for pick in suggestion.picks] == ["m-median"]


def test_pilot_candidates_suggest__flag_without_events__environment_basis(
    activity, flag_factory
):
    # Given
    flag_factory("brand_new_flag", value_type="bool")
    # When
    suggestion = pilot_candidates_suggest(
        flag_key="brand_new_flag", environment_key="production"
    )
    # Then: every event in production counts, so m-other-flag joins
    assert suggestion.basis == "environment"
    assert "m-other-flag" in {pick.merchant for pick in suggestion.picks}


def test_merchants_suggest_pilot__table__metrics_and_order(activity):
    # Given
    out = StringIO()
    # When
    call_command(
        "merchants", "suggest-pilot", "--flag", FLAG, "--days", "7", stdout=out
    )
    # Then
    text = out.getvalue()
    assert "median 100 events" in text
    positions = [text.index(name) for name in ("m-median", "m-near", "m-half")]
    assert positions == sorted(positions)
    assert "98.0%" in text and "success 98.0% > 80%" in text
    assert "Not suggested" in text and "m-giant" in text


def test_merchants_suggest_pilot__json__picks_in_order(activity):
    # Given
    out = StringIO()
    # When
    call_command(
        "merchants",
        "suggest-pilot",
        "--flag",
        FLAG,
        "--env",
        "production",
        "--limit",
        "2",
        "--format",
        "json",
        stdout=out,
    )
    # Then
    body = json.loads(out.getvalue())
    assert [pick["merchant"] for pick in body["picks"]] == ["m-median", "m-near"]
    assert body["picks"][0]["events"] == 100


def test_merchants_suggest_pilot__no_events__says_so(production, flag_factory):
    # Given
    flag_factory(FLAG, value_type="bool")
    out = StringIO()
    # When
    call_command("merchants", "suggest-pilot", "--flag", FLAG, stdout=out)
    # Then
    assert "No merchant qualifies" in out.getvalue()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--flag", "nope"], "nope"),
        (["--flag", FLAG, "--env", "mars"], "mars"),
        (["--flag", FLAG, "--days", "0"], "at least 1"),
    ],
)
def test_merchants_suggest_pilot__bad_input__command_error(activity, argv, message):
    # When / Then
    with pytest.raises(CommandError, match=message):
        call_command("merchants", "suggest-pilot", *argv, stdout=StringIO())
