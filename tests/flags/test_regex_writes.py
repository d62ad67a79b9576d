"""Every write path refuses a ``matches`` pattern RE2 cannot run in linear time.

Service, management API and admin form, against the real database: the
refusal names the value (``rules[0].clauses[1].values[0]``) and writes
nothing, no row change and no audit event.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import InvalidInput
from flags import services
from flags.models import FlagState, Segment

BACKREFERENCE = r"^(a+)\1$"  # Python's re accepts it; RE2 cannot run it linearly
STATE = "/api/v1/flags/f/environments/production"


def _rules(pattern: str) -> list[dict[str, Any]]:
    return [
        {
            "clauses": [
                {"attribute": "tier", "op": "in", "values": ["gold"]},
                {"attribute": "plan", "op": "matches", "values": [pattern]},
            ],
            "serve": {"variation": "on"},
        }
    ]


def _clauses(pattern: str) -> list[dict[str, Any]]:
    return [{"attribute": "plan", "op": "matches", "values": ["^ok$", pattern]}]


@pytest.fixture
def api(db) -> Client:
    client = Client()
    client.force_login(User.objects.create_superuser("ops", password="x"))
    return client


def _send(client: Client, method: str, url: str, body: Any) -> Any:
    return getattr(client, method)(
        url, data=json.dumps(body), content_type="application/json"
    )


@pytest.mark.parametrize(
    "pattern", [BACKREFERENCE, "(", "x" * 1001], ids=["backref", "syntax", "long"]
)
def test_flag_state_update__pattern_re2_refuses__invalid_input_on_value_nothing_written(
    production, flag_factory, pattern
):
    # Given
    flag = flag_factory("f")
    events = AuditEvent.objects.count()
    # When
    with pytest.raises(InvalidInput) as error:
        services.flag_state_update(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            expected_version=None,
            rules=_rules(pattern),
        )
    # Then
    assert error.value.field == "rules[0].clauses[1].values[0]"
    assert FlagState.objects.get(flag=flag, environment=production).rules == []
    assert AuditEvent.objects.count() == events


def test_segment_create__pattern_re2_refuses__invalid_input_on_value_no_row(db):
    # When
    with pytest.raises(InvalidInput) as error:
        services.segment_create(actor=SYSTEM, key="s", clauses=_clauses(BACKREFERENCE))
    # Then
    assert error.value.field == "clauses[0].values[1]"
    assert not Segment.objects.exists()


def test_flag_state_patch_api__pattern_re2_refuses__400_with_the_field(
    api, production, flag_factory
):
    # Given
    flag = flag_factory("f")
    version = api.get(STATE).json()["version"]
    # When
    response = _send(
        api, "patch", STATE, {"version": version, "rules": _rules(BACKREFERENCE)}
    )
    # Then
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid"
    assert list(body["errors"]) == ["rules[0].clauses[1].values[0]"]
    assert (
        "bad regular expression" in body["errors"]["rules[0].clauses[1].values[0]"][0]
    )
    state = FlagState.objects.get(flag=flag, environment=production)
    assert (state.rules, state.version) == ([], version)


def test_flag_state_patch_api__linear_pattern__200_and_served(
    api, production, flag_factory
):
    # Given
    flag_factory("f")
    version = api.get(STATE).json()["version"]
    # When
    response = _send(
        api, "patch", STATE, {"version": version, "rules": _rules("^(a+)+$")}
    )
    # Then
    assert response.status_code == 200, response.content
    assert response.json()["rules"][0]["clauses"][1]["values"] == ["^(a+)+$"]


@pytest.mark.parametrize(
    "method, url", [("post", "/api/v1/segments"), ("put", "/api/v1/segments/s")]
)
def test_segment_api__pattern_re2_refuses__400_with_the_field(api, db, method, url):
    # Given
    services.segment_create(
        actor=SYSTEM,
        key="s",
        clauses=[{"attribute": "plan", "op": "matches", "values": ["^ok$"]}],
    )
    body = {"key": "t", "name": "s", "description": "", "clauses": _clauses("(?=x)")}
    # When
    response = _send(api, method, url, body)
    # Then
    assert response.status_code == 400
    assert list(response.json()["errors"]) == ["clauses[0].values[1]"]
    assert list(Segment.objects.values_list("key", "clauses")) == [
        (
            "s",
            [
                {
                    "attribute": "plan",
                    "op": "matches",
                    "values": ["^ok$"],
                    "negate": False,
                }
            ],
        )
    ]


def test_flag_state_admin_change__pattern_re2_refuses__field_error_nothing_written(
    admin_client, production, flag_factory
):
    # Given
    flag = flag_factory("f")
    state = FlagState.objects.get(flag=flag, environment=production)
    url = reverse("admin:flags_flagstate_change", args=[state.pk])
    form = admin_client.get(url).context["adminform"].form
    data = {
        name: form[name].value()
        for name in form.fields
        if form[name].value() not in (None, False)
    }
    data["rules"] = json.dumps(_rules(BACKREFERENCE))
    # When
    response = admin_client.post(url, data)
    # Then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "rules[0].clauses[1].values[0]" in errors["rules"][0]
    assert FlagState.objects.get(pk=state.pk).version == state.version


def test_segment_admin_add__pattern_re2_refuses__field_error_and_no_row(
    admin_client, db
):
    # When
    response = admin_client.post(
        reverse("admin:flags_segment_add"),
        {"key": "s", "name": "S", "clauses": json.dumps(_clauses(BACKREFERENCE))},
    )
    # Then
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "clauses[0].values[1]" in errors["clauses"][0]
    assert not Segment.objects.exists()
