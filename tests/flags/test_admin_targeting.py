"""Targeting rows on the flag state page: rules, the default split, overrides.

Real requests as a logged-in superuser: each test reads the rendered page
as a browser would post it (``targeting_page.form_fields``), changes a few
controls, posts, and checks the rows and audit events the services wrote.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services
from flags.models import FlagState, MerchantOverride
from tests.flags.targeting_page import form_fields

FORM = "flagstate_form"


def _state(flag, environment) -> FlagState:
    return FlagState.objects.select_related("flag", "environment").get(
        flag=flag, environment=environment
    )


def _url(state: FlagState) -> str:
    return reverse("admin:flags_flagstate_change", args=[state.pk])


def _page(client, state: FlagState) -> dict[str, Any]:
    response = client.get(_url(state))
    assert response.status_code == 200
    return form_fields(response.content.decode(), FORM)


def _errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: list(errors) for name, errors in form.errors.items()}


@pytest.fixture
def targeted(flag_factory, merchant_factory, production):
    """A bool flag on in production: a rule, a 10% split, an override."""
    services.segment_create(
        actor=SYSTEM,
        key="gold-kr",
        name="Gold in Korea",
        clauses=[{"attribute": "country", "op": "in", "values": ["KR"]}],
    )
    flag = flag_factory()
    merchant = merchant_factory(key="m-1001")
    services.flag_state_update(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        expected_version=None,
        enabled=True,
        rules=[
            {
                "clauses": [
                    {"attribute": "tier", "op": "in", "values": ["gold", 5]},
                    {"attribute": "", "op": "segment", "values": ["gold-kr"]},
                    {
                        "attribute": "plan",
                        "op": "in",
                        "values": ["a,b"],
                        "negate": True,
                    },
                ],
                "serve": {"variation": "on"},
                "description": "gold",
            },
            {
                "clauses": [{"attribute": "size", "op": "gte", "values": [10, 2.5]}],
                "serve": {
                    "split": [
                        {"variation": "off", "weight": 0},
                        {"variation": "on", "weight": 100000},
                    ]
                },
            },
        ],
        fallthrough={
            "split": [
                {"variation": "on", "weight": 10000},
                {"variation": "off", "weight": 90000},
            ]
        },
    )
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
        expires_at=timezone.now() + dt.timedelta(days=3, seconds=17),
    )
    return flag


def test_state_page__posted_untouched__nothing_changes(
    admin_client, targeted, production
):
    # Given: every kind of row (numbers in "is one of", a comma inside a
    # value, a segment, a 0% arm first in a split, an expiry with seconds)
    state = _state(targeted, production)
    before = (state.rules, state.fallthrough, state.version)
    events = AuditEvent.objects.count()
    data = _page(admin_client, state)
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    state = _state(targeted, production)
    assert (state.rules, state.fallthrough, state.version) == before
    assert AuditEvent.objects.count() == events


def test_state_page__rule_added_in_rows__saved_and_audited(
    admin_client, admin_user, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    data = _page(admin_client, state)
    new = "targeting_rules-0"  # no rules yet: the first is the new one
    data |= {
        f"{new}-clause-0-attribute": "tier",
        f"{new}-clause-0-op": "in",
        f"{new}-clause-0-values": "gold, platinum",
        f"{new}-serve-mode": "variation",
        f"{new}-serve-variation": "on",
        f"{new}-description": "big merchants",
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    state = _state(flag, production)
    assert state.rules == [
        {
            "clauses": [
                {
                    "attribute": "tier",
                    "op": "in",
                    "values": ["gold", "platinum"],
                    "negate": False,
                }
            ],
            "serve": {"variation": "on"},
            "description": "big merchants",
        }
    ]
    event = AuditEvent.objects.filter(
        action="flag_state.updated", target_id=str(state.pk)
    ).get()
    assert event.actor_name == admin_user.username


def test_state_page__default_split_in_percent__weights_in_thousandths(
    admin_client, flag_factory, production
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    data = _page(admin_client, state)
    arms = {data[f"targeting_default-arm-{i}-variation"]: i for i in range(2)}
    data |= {
        "targeting_default-mode": "split",
        f"targeting_default-arm-{arms['on']}-percent": "12.345",
        f"targeting_default-arm-{arms['off']}-percent": "87.655%",
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    weights = {
        arm["variation"]: arm["weight"]
        for arm in _state(flag, production).fallthrough["split"]
    }
    assert weights == {"on": 12345, "off": 87655}


@pytest.mark.parametrize(
    ("on", "off", "message"),
    [
        ("10", "85", "adds up to 95.000%, not 100.000%"),
        ("10.0005", "89.9995", "at most three decimals"),
        ("150", "-50", "between 0 and 100"),
        ("ten", "90", "'ten' is not a percentage"),
        ("1e999", "0", "between 0 and 100"),
    ],
)
def test_state_page__bad_split__error_on_the_rows_nothing_written(
    admin_client, flag_factory, production, on, off, message
):
    # Given
    flag = flag_factory()
    state = _state(flag, production)
    data = _page(admin_client, state)
    arms = {data[f"targeting_default-arm-{i}-variation"]: i for i in range(2)}
    data |= {
        "targeting_default-mode": "split",
        f"targeting_default-arm-{arms['on']}-percent": on,
        f"targeting_default-arm-{arms['off']}-percent": off,
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 200
    assert message in " ".join(_errors(response)["targeting_default"])
    assert _state(flag, production).version == 1


def test_state_page__segment_chosen_and_rule_removed__saved(
    admin_client, targeted, production
):
    # Given: rule 1 removed; rule 2 gets a segment clause instead of its own
    state = _state(targeted, production)
    data = _page(admin_client, state)
    data |= {
        "targeting_rules-0-delete": "on",
        "targeting_rules-1-clause-1-op": "segment",
        "targeting_rules-1-clause-1-segments": ["gold-kr"],
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    rules = _state(targeted, production).rules
    assert len(rules) == 1
    assert rules[0]["clauses"] == [
        {"attribute": "size", "op": "gte", "values": [10, 2.5], "negate": False},
        {"attribute": "", "op": "segment", "values": ["gold-kr"], "negate": False},
    ]


def test_state_page__positions_swapped__rules_reordered(
    admin_client, targeted, production
):
    # Given
    state = _state(targeted, production)
    first, second = state.rules
    data = _page(admin_client, state) | {
        "targeting_rules-0-order": "2",
        "targeting_rules-1-order": "1",
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    assert _state(targeted, production).rules == [second, first]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"targeting_rules-1-clause-0-values": "ten"}, "'ten' is not a number"),
        ({"targeting_rules-1-clause-0-attribute": ""}, "an attribute is required"),
        ({"targeting_rules-1-clause-0-values": ""}, "give at least one value"),
        ({"targeting_rules-0-clause-0-attribute": "ti\x00er"}, "NUL"),
        ({"targeting_rules-0-clause-0-values": "[1, "}, "clause 1 values"),
        ({"targeting_rules-0-clause-0-op": "nope"}, "choose an operator"),
        ({"targeting_rules-0-clauses": "99999"}, "row count"),
        ({"targeting_rules-0-serve-variation": "maybe"}, "choose one of on, off"),
        (
            {
                "targeting_rules-0-clause-0-delete": "on",
                "targeting_rules-0-clause-1-delete": "on",
                "targeting_rules-0-clause-2-delete": "on",
            },
            "rule 1: needs a clause",
        ),
    ],
)
def test_state_page__bad_rule_rows__error_on_rules_nothing_written(
    admin_client, targeted, production, changes, message
):
    # Given
    state = _state(targeted, production)
    data = _page(admin_client, state) | changes
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 200
    assert message in " ".join(_errors(response)["targeting_rules"])
    assert _state(targeted, production).version == state.version


def test_state_page__regex_refused_by_service__error_shown_on_rules(
    admin_client, targeted, production
):
    # Given: the rows parse; the service's engine compiler refuses the regex
    state = _state(targeted, production)
    data = _page(admin_client, state) | {
        "targeting_rules-1-clause-0-op": "matches",
        "targeting_rules-1-clause-0-values": '["(unclosed"]',
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 200
    assert "rules[1].clauses[0].values" in " ".join(
        _errors(response)["targeting_rules"]
    )
    assert _state(targeted, production).version == state.version


def test_state_page__json_edited__json_wins_over_rows(
    admin_client, targeted, production
):
    # Given: the advanced JSON of the default is edited, its rows are not
    state = _state(targeted, production)
    data = _page(admin_client, state) | {"fallthrough": '{"variation": "on"}'}
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    assert _state(targeted, production).fallthrough == {"variation": "on"}


def test_state_page__json_section__collapsed(admin_client, targeted, production):
    # When
    html = admin_client.get(_url(_state(targeted, production))).content.decode()
    # Then: the JSON is inside a collapsed <details>, after the rows
    advanced = html.index("Advanced: JSON")
    assert html.rfind("<details", 0, advanced) > html.index('name="targeting_rules-')
    assert html.index('name="rules"') > advanced


def test_state_page__override_added_with_expiry__set_through_service(
    admin_client, admin_user, flag_factory, merchant_factory, production
):
    # Given
    flag = flag_factory()
    merchant_factory(key="m-2002")
    state = _state(flag, production)
    data = _page(admin_client, state)
    expiry = (timezone.now() + dt.timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    data |= {
        "overrides_rows-0-merchant": "m-2002",
        "overrides_rows-0-variation": "on",
        "overrides_rows-0-expires_at": expiry,
        "overrides_rows-0-note": "pilot",
    }
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    override = MerchantOverride.objects.get(flag=flag, merchant__key="m-2002")
    assert (override.variation, override.note) == ("on", "pilot")
    assert override.expires_at.strftime("%Y-%m-%dT%H:%M") == expiry
    event = AuditEvent.objects.get(
        action="override.created", target_id=str(override.pk)
    )
    assert event.actor_name == admin_user.username


def test_state_page__override_removed__removed_through_service(
    admin_client, targeted, production
):
    # Given
    state = _state(targeted, production)
    data = _page(admin_client, state) | {"overrides_rows-0-delete": "on"}
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 302, _errors(response)
    assert not MerchantOverride.objects.filter(flag=targeted).exists()
    assert AuditEvent.objects.filter(action="override.removed").count() == 1


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"overrides_rows-1-merchant": "nobody", "overrides_rows-1-variation": "on"},
            "unknown merchant 'nobody'",
        ),
        (
            {
                "overrides_rows-1-merchant": "m-1001",
                "overrides_rows-1-variation": "off",
            },
            "m-1001 appears twice",
        ),
        ({"overrides_rows-0-expires_at": "2001-01-01T00:00"}, "must be in the future"),
        ({"overrides_rows-0-expires_at": "soon"}, "is not a date and time"),
        ({"overrides_rows-1-merchant": "m-\x00"}, "NUL"),
    ],
)
def test_state_page__bad_override_rows__error_nothing_written(
    admin_client, targeted, production, changes, message
):
    # Given
    state = _state(targeted, production)
    data = _page(admin_client, state) | changes
    events = AuditEvent.objects.count()
    # When
    response = admin_client.post(_url(state), data)
    # Then
    assert response.status_code == 200
    assert message in " ".join(_errors(response)["overrides_rows"])
    assert AuditEvent.objects.count() == events
    assert MerchantOverride.objects.get(flag=targeted).variation == "on"


def test_override_page__variation__chosen_among_the_flags_variations(
    admin_client, targeted, production
):
    # Given
    override = MerchantOverride.objects.get(flag=targeted)
    url = reverse("admin:flags_merchantoverride_change", args=[override.pk])
    data = form_fields(admin_client.get(url).content.decode(), "merchantoverride_form")
    # When: a variation the flag does not have, then one it has
    refused = admin_client.post(url, data | {"variation": "maybe"})
    accepted = admin_client.post(url, data | {"variation": "off"})
    # Then
    assert refused.status_code == 200
    assert "variation" in refused.context["adminform"].form.errors
    assert accepted.status_code == 302
    override.refresh_from_db()
    assert override.variation == "off"
    assert AuditEvent.objects.filter(action="override.updated").count() == 1


def test_demo_pages__posted_untouched__nothing_changes(admin_client, db):
    # Given: the README's demo (bool, number, string split with rules)
    from flags.demo import demo_ensure

    demo_ensure()
    states = list(FlagState.objects.select_related("flag", "environment"))
    flag_pages = [
        admin_client.get(reverse("admin:flags_flag_change", args=[state.flag_id]))
        for state in states
    ]
    events = AuditEvent.objects.count()
    for state in states:
        # When
        response = admin_client.post(_url(state), _page(admin_client, state))
        # Then
        assert response.status_code == 302, (str(state), _errors(response))
    for flag_id in {state.flag_id for state in states}:
        url = reverse("admin:flags_flag_change", args=[flag_id])
        data = form_fields(admin_client.get(url).content.decode(), "flag_form")
        response = admin_client.post(url, data)
        assert response.status_code == 302, _errors(response)
    assert AuditEvent.objects.count() == events
    assert all(page.status_code == 200 for page in flag_pages)
    assert all(b"Who gets what" in page.content for page in flag_pages)


def test_state_page__only_a_rule_changed__change_message_names_only_rules(
    admin_client, targeted, production
):
    # Given
    state = _state(targeted, production)
    data = _page(admin_client, state) | {"targeting_rules-0-description": "renamed"}
    # When
    response = admin_client.post(_url(state), data)
    # Then: Django's own history says what changed, nothing more
    assert response.status_code == 302, _errors(response)
    from django.contrib.admin.models import LogEntry

    message = LogEntry.objects.latest("action_time").get_change_message()
    assert "Rules" in message
    assert "overrides" not in message.lower()
    assert "default" not in message.lower()
