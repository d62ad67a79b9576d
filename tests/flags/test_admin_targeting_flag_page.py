"""The flag page: variation rows, who gets what, and evaluating on the spot.

Real requests as a logged-in superuser; the evaluation goes through the
same in-memory ruleset the evaluation API serves, and is checked against
``POST /api/v1/evaluate`` with a server API key.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.urls import reverse
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from flags import services
from flags.models import Flag
from tests.apikeys.fixtures import (  # noqa: F401
    server_key,
    server_key_factory,
    serving_reset,
)
from tests.flags.targeting_page import form_fields

FORM = "flag_form"


def _url(flag: Flag) -> str:
    return reverse("admin:flags_flag_change", args=[flag.pk])


def _page(client, flag: Flag) -> dict:
    response = client.get(_url(flag))
    assert response.status_code == 200
    return form_fields(response.content.decode(), FORM)


def _errors(response) -> dict[str, list[str]]:
    form = response.context["adminform"].form
    return {name: list(errors) for name, errors in form.errors.items()}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


# -- variation rows ----------------------------------------------------------------


def test_flag_page__string_variation_added_in_rows__saved_and_audited(
    admin_client, admin_user, environments, flag_factory
):
    # Given
    flag = flag_factory(
        value_type="string",
        variations=[{"key": "blue", "value": "blue"}, {"key": "green", "value": "g"}],
    )
    data = _page(admin_client, flag) | {
        "variation_rows-2-key": "red",
        "variation_rows-2-name": "Red",
        "variation_rows-2-value": "#f00",
    }
    # When
    response = admin_client.post(_url(flag), data)
    # Then
    assert response.status_code == 302, _errors(response)
    flag.refresh_from_db()
    assert flag.variations == [
        {"key": "blue", "value": "blue"},
        {"key": "green", "value": "g"},
        {"key": "red", "value": "#f00", "name": "Red"},
    ]
    event = AuditEvent.objects.get(action="flag.updated", target_id=str(flag.pk))
    assert event.actor_name == admin_user.username


@pytest.mark.parametrize(
    ("value_type", "variations", "typed", "expected"),
    [
        ("number", [{"key": "fast", "value": 100}], "250", 250),
        ("number", [{"key": "fast", "value": 100}], "0.25", 0.25),
        ("json", [{"key": "a", "value": {"x": 1}}], '{"x": [1, 2]}', {"x": [1, 2]}),
        ("json", [{"key": "a", "value": {"x": 1}}], '"text"', "text"),
    ],
)
def test_flag_page__typed_value_edited__stored_with_its_type(
    admin_client, environments, flag_factory, value_type, variations, typed, expected
):
    # Given
    flag = flag_factory(value_type=value_type, variations=variations)
    data = _page(admin_client, flag) | {"variation_rows-0-value": typed}
    # When
    response = admin_client.post(_url(flag), data)
    # Then
    assert response.status_code == 302, _errors(response)
    flag.refresh_from_db()
    assert flag.variations[0]["value"] == expected
    assert type(flag.variations[0]["value"]) is type(expected)


@pytest.mark.parametrize(
    ("value_type", "typed", "message"),
    [
        ("number", "abc", "'abc' is not a number"),
        ("number", "1e999", "too large"),
        ("number", "NaN", "not a finite number"),
        ("number", "", "a number is required"),
        ("json", "{bad", "variation 1 value"),
        ("json", '"\\u0000"', "NUL"),
        ("string", "a\x00b", "NUL"),
    ],
)
def test_flag_page__bad_typed_value__row_error_nothing_written(
    admin_client, environments, flag_factory, value_type, typed, message
):
    # Given
    initial = {"number": 1, "json": {"x": 1}, "string": "s"}[value_type]
    flag = flag_factory(
        value_type=value_type, variations=[{"key": "a", "value": initial}]
    )
    data = _page(admin_client, flag) | {"variation_rows-0-value": typed}
    # When
    response = admin_client.post(_url(flag), data)
    # Then
    assert response.status_code == 200
    assert message in " ".join(_errors(response)["variation_rows"])
    flag.refresh_from_db()
    assert flag.variations == [{"key": "a", "value": initial}]


def test_flag_page__variation_in_use_removed__service_error_on_rows(
    admin_client, environments, flag_factory
):
    # Given: b is the off variation of every state
    flag = flag_factory(
        value_type="string",
        variations=[{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
    )
    data = _page(admin_client, flag) | {"variation_rows-1-delete": "on"}
    # When
    response = admin_client.post(_url(flag), data)
    # Then
    assert response.status_code == 200
    assert "still in use" in " ".join(_errors(response)["variation_rows"])


def test_flag_add__string_variations_in_rows__created(admin_client, environments):
    # Given
    response = admin_client.get(reverse("admin:flags_flag_add"))
    data = form_fields(response.content.decode(), FORM) | {
        "key": "checkout-theme",
        "name": "Checkout theme",
        "value_type": "string",
        "variation_rows-0-key": "light",
        "variation_rows-0-value": "light",
        "variation_rows-1-key": "dark",
        "variation_rows-1-value": "dark",
    }
    # When
    response = admin_client.post(reverse("admin:flags_flag_add"), data)
    # Then
    assert response.status_code == 302, _errors(response)
    flag = Flag.objects.get(key="checkout-theme")
    assert flag.variation_keys == ["light", "dark"]


def test_flag_add__bool_with_empty_rows__gets_on_off(admin_client, environments):
    # Given
    response = admin_client.get(reverse("admin:flags_flag_add"))
    data = form_fields(response.content.decode(), FORM) | {
        "key": "new-checkout",
        "name": "New checkout",
        "value_type": "bool",
    }
    # When
    response = admin_client.post(reverse("admin:flags_flag_add"), data)
    # Then
    assert response.status_code == 302, _errors(response)
    assert Flag.objects.get(key="new-checkout").variations == [
        {"key": "on", "value": True},
        {"key": "off", "value": False},
    ]


# -- who gets what -------------------------------------------------------------------


@pytest.fixture
def rolled_out(flag_factory, merchant_factory, environments, serving_reset):
    """A bool flag: production 10% + a gold rule + m-1001; staging killed."""
    production, staging = environments["production"], environments["staging"]
    flag = flag_factory(key="sequential-workflow")
    merchant_factory(key="m-1001")
    merchant_factory(key="m-2002", attributes={"tier": "gold"})
    services.flag_state_update(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        expected_version=None,
        enabled=True,
        rules=[
            {
                "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
                "serve": {"variation": "on"},
            }
        ],
    )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flag, environment=production, percentage=10
    )
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=services_merchant("m-1001"),
        variation="on",
        expires_at=timezone.now() + dt.timedelta(days=3, minutes=5),
    )
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=staging, enabled=True
    )
    services.flag_state_kill(
        actor=SYSTEM, flag=flag, environment=staging, reason="errors spiking"
    )
    return flag


def services_merchant(key: str):
    from flags.models import Merchant

    return Merchant.objects.get(key=key)


def test_flag_page__rolled_out__says_who_gets_what_per_environment(
    admin_client, rolled_out
):
    # When
    html = admin_client.get(_url(rolled_out)).content.decode()
    # Then
    text = _text(html)
    assert (
        "production: m-1001 → on (override, expires in 3 days) · "
        "rule 1 (tier is one of gold) → on · "
        "10.000% of merchants → on · everyone else → off"
    ) in text
    assert "staging: killed (errors spiking) · everyone → off" in text
    bars = re.findall(r'<div class="bar bar-labelled"[^>]*aria-label="([^"]*)"', html)
    assert bars == ["on 10.000%, off 90.000%", "on 0.000%, off 100.000%"]
    assert 'style="width: 10.000%"' in html


def test_flag_page__disabled_state__says_off(admin_client, environments, flag_factory):
    # Given: a new flag is off everywhere
    flag = flag_factory()
    # When
    text = _text(admin_client.get(_url(flag)).content.decode())
    # Then
    assert "production: off · everyone → off" in text
    assert "staging: off · everyone → off" in text


# -- evaluate on the spot --------------------------------------------------------------


def _evaluate(client, flag: Flag, environment: str, merchant: str):
    return client.get(
        _url(flag),
        {"evaluate_environment": environment, "evaluate_merchant": merchant},
    )


@pytest.mark.parametrize(
    ("environment", "merchant", "variation", "reason", "level"),
    [
        ("production", "m-1001", "on", "TARGETING_MATCH", "override"),
        ("production", "m-2002", "on", "TARGETING_MATCH", "rule:1"),
        ("staging", "m-1001", "off", "DISABLED", "off"),
    ],
)
def test_flag_page__evaluate__engine_answer_with_reason_and_level(
    admin_client, rolled_out, environment, merchant, variation, reason, level
):
    # When
    response = _evaluate(admin_client, rolled_out, environment, merchant)
    # Then
    assert response.status_code == 200
    answer = response.context["evaluation"]
    assert (answer.variation, answer.reason, answer.level) == (
        variation,
        reason,
        level,
    )
    assert answer.value == ("true" if variation == "on" else "false")
    text = _text(response.content.decode())
    assert f"reason {reason} level {level}" in text


def test_flag_page__evaluate__same_answer_as_the_evaluation_api(
    admin_client, client, rolled_out, server_key
):
    # Given: a server key of production, as apps use
    secret = server_key
    for merchant in ("m-1001", "m-2002", "m-3003", "m-4004", "unknown-7"):
        # When
        page = _evaluate(admin_client, rolled_out, "production", merchant)
        api = client.post(
            "/api/v1/evaluate",
            {"context": {"merchant": merchant}, "flags": [rolled_out.key]},
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        # Then
        assert api.status_code == 200, api.content
        flag_answer = api.json()["flags"][0]
        answer = page.context["evaluation"]
        assert (answer.variation, answer.reason, answer.level) == (
            flag_answer["variation"],
            flag_answer["reason"],
            flag_answer["level"],
        )


@pytest.mark.parametrize(
    ("environment", "merchant", "message"),
    [
        ("production", "", "merchant key: is required"),
        ("production", "m" * 500, "at most 128 characters"),
        ("nowhere", "m-1001", "environment: choose one"),
    ],
)
def test_flag_page__evaluate_bad_input__400_with_message(
    admin_client, rolled_out, environment, merchant, message
):
    # When
    response = _evaluate(admin_client, rolled_out, environment, merchant)
    # Then
    assert response.status_code == 400
    assert message in response.context["evaluation"].error
    assert message.split(":")[0] in response.content.decode()


def test_flag_page__evaluate_nul_in_key__400(admin_client, rolled_out):
    # When: refused before the page (controlplane.middleware)
    response = _evaluate(admin_client, rolled_out, "production", "m\x00")
    # Then
    assert response.status_code == 400


def test_flag_page__variations_json__collapsed_after_the_rows(
    admin_client, environments, flag_factory
):
    # When
    html = admin_client.get(_url(flag_factory())).content.decode()
    # Then
    advanced = html.index("Advanced: JSON")
    assert html.index('name="variation_rows-0-key"') < advanced
    assert html.rfind("<details", 0, advanced) > html.index(
        'name="variation_rows-0-key"'
    )
    assert html.index('name="variations"') > advanced
