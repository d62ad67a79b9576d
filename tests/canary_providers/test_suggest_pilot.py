"""``merchants suggest-pilot`` on synthetic outcome events: the operators'
rule (active registry merchant, seen in 7 days, success above 80%, 5-20
workflows in 30 days) and why each near-miss was left out."""

from __future__ import annotations

import json
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from canary.selectors import PilotCriteria, pilot_candidates_suggest
from canary.services.outcomes import outcome_events_ingest
from controlplane.exceptions import InvalidInput
from flags.models import MerchantOverride

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
    """Merchants with known activity over the last month."""
    flag_factory(FLAG, value_type="bool")
    for key in ("m-best", "m-good", "m-flaky", "m-quiet", "m-busy", "m-stale"):
        merchant_factory(key)
    merchant_factory("m-dormant", is_active=False)
    merchant_factory("m-other-flag")
    _report("m-ghost", events=12, failures=0)  # perfect, but not in the registry
    _report("m-best", events=12, failures=0)  # 100%: first
    _report("m-good", events=10, failures=1)  # 90%: second
    _report("m-flaky", events=10, failures=3)  # 70%
    _report("m-quiet", events=3, failures=0)  # fewer than 5 a month
    _report("m-busy", events=40, failures=1)  # more than 20 a month
    _report("m-stale", events=10, failures=0, days=3, age=timedelta(days=10))
    _report("m-dormant", events=10, failures=0)  # inactive in the registry
    _report("m-other-flag", events=10, failures=0, flag="other_flag")


def _why(suggestion) -> dict[str, str]:
    return {item.merchant: "; ".join(item.reasons) for item in suggestion.left_out}


def test_pilot_candidates_suggest__operators_rule__registry_picks_and_reasons(
    activity,
):
    # When
    suggestion = pilot_candidates_suggest(flag_key=FLAG, environment_key="production")
    # Then
    assert [pick.merchant for pick in suggestion.picks] == ["m-best", "m-good"]
    assert suggestion.basis == "flag" and suggestion.merchants_seen == 8
    assert _why(suggestion) == {
        "m-ghost": "not in the merchant registry",
        "m-dormant": "inactive in the merchant registry",
        "m-flaky": "success 70.0% is not above 80%",
        "m-quiet": "3 workflows in 30 days: fewer than 5",
        "m-busy": "40 workflows in 30 days: more than 20",
        "m-stale": (
            "not active in the last 7 days (last seen "
            f"{timezone.now() - timedelta(days=10, minutes=1):%Y-%m-%d})"
        ),
    }
    best = suggestion.picks[0]
    assert (best.events, best.failures, best.success_rate) == (12, 0, 1.0)


def test_pilot_candidates_suggest__merchant_not_in_registry__never_picked(
    production, flag_factory, merchant_factory
):
    # Given: the best activity belongs to a merchant the registry does not know
    flag_factory(FLAG, value_type="bool")
    merchant_factory("m-known")
    _report("m-unknown", events=12, failures=0)
    _report("m-known", events=10, failures=1)
    # When
    suggestion = pilot_candidates_suggest(flag_key=FLAG, environment_key="production")
    # Then
    assert [pick.merchant for pick in suggestion.picks] == ["m-known"]
    assert _why(suggestion) == {"m-unknown": "not in the merchant registry"}


def test_pilot_candidates_suggest__criteria_given__rule_follows_them(activity):
    # When
    suggestion = pilot_candidates_suggest(
        flag_key=FLAG,
        environment_key="production",
        criteria=PilotCriteria(
            active_days=14, min_success=0.95, min_monthly=1, max_monthly=50
        ),
    )
    # Then
    assert [pick.merchant for pick in suggestion.picks] == [
        "m-best",
        "m-stale",
        "m-quiet",
        "m-busy",
    ]
    assert _why(suggestion)["m-good"] == "success 90.0% is not above 95%"


@pytest.mark.parametrize(
    "criteria, field",
    [
        (PilotCriteria(active_days=0), "active_days"),
        (PilotCriteria(active_days=31), "active_days"),
        (PilotCriteria(min_success=1.0), "min_success"),
        (PilotCriteria(min_monthly=-1), "min_monthly"),
        (PilotCriteria(min_monthly=10, max_monthly=5), "max_monthly"),
    ],
)
def test_pilot_candidates_suggest__bad_criteria__invalid_input(
    activity, criteria, field
):
    # When
    with pytest.raises(InvalidInput) as error:
        pilot_candidates_suggest(
            flag_key=FLAG, environment_key="production", criteria=criteria
        )
    # Then
    assert error.value.field == field


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


def test_merchants_suggest_pilot__table__picks_then_left_out_with_reasons(activity):
    # Given
    out = StringIO()
    # When
    call_command("merchants", "suggest-pilot", "--flag", FLAG, stdout=out)
    # Then
    text = out.getvalue()
    picks, left_out = text.split("Left out (nearest misses first)")
    assert picks.index("m-best") < picks.index("m-good")
    assert "m-ghost" not in picks
    assert "success rate above 80%, 5 to 20 workflows in 30 days" in picks
    for merchant, reason in [
        ("m-ghost", "not in the merchant registry"),
        ("m-busy", "more than 20"),
        ("m-quiet", "fewer than 5"),
        ("m-flaky", "70.0% is not above 80%"),
        ("m-stale", "not active in the last 7 days"),
        ("m-dormant", "inactive in the merchant registry"),
    ]:
        line = next(row for row in left_out.splitlines() if merchant in row)
        assert reason in line


def test_merchants_suggest_pilot__criteria_options__passed_to_the_rule(activity):
    # Given
    out = StringIO()
    # When
    call_command(
        "merchants",
        "suggest-pilot",
        "--flag",
        FLAG,
        "--active-days",
        "14",
        "--min-success",
        "0.95",
        "--min-monthly",
        "1",
        "--max-monthly",
        "50",
        "--format",
        "json",
        stdout=out,
    )
    # Then
    body = json.loads(out.getvalue())
    assert body["criteria"] == {
        "active_days": 14,
        "min_success": 0.95,
        "min_monthly": 1,
        "max_monthly": 50,
        "month_days": 30,
    }
    assert [p["merchant"] for p in body["picks"]] == [
        "m-best",
        "m-stale",
        "m-quiet",
        "m-busy",
    ]
    assert {item["merchant"] for item in body["left_out"]} == {
        "m-ghost",
        "m-dormant",
        "m-good",
        "m-flaky",
    }


def test_merchants_suggest_pilot__first_pick__flag_override_add_accepts_it(activity):
    # Given
    out = StringIO()
    call_command(
        "merchants", "suggest-pilot", "--flag", FLAG, "--format", "json", stdout=out
    )
    first = json.loads(out.getvalue())["picks"][0]["merchant"]
    # When
    call_command(
        "flag", "override", "add", FLAG, first, "--env", "production", stdout=StringIO()
    )
    # Then
    assert MerchantOverride.objects.filter(merchant__key=first).count() == 1


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
        (["--flag", FLAG, "--active-days", "40"], "active_days: must be 1 to 30"),
        (["--flag", FLAG, "--min-success", "80"], "below 1"),
        (["--flag", FLAG, "--min-monthly", "9", "--max-monthly", "3"], "max_monthly"),
    ],
)
def test_merchants_suggest_pilot__bad_input__command_error(activity, argv, message):
    # When / Then
    with pytest.raises(CommandError, match=message):
        call_command("merchants", "suggest-pilot", *argv, stdout=StringIO())
