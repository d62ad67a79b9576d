"""POST /api/v1/events with ``flags``: every flag served to one request.

An event naming several flags is stored once per flag (same merchant,
outcome, duration, time and id); through Django's test client with a real
server key.
"""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from canary.models import OutcomeEvent
from controlplane.apikeys.cache import key_cache
from controlplane.audit.actors import SYSTEM

URL = "/api/v1/events"


@pytest.fixture(autouse=True)
def _fresh_key_cache():
    key_cache.clear()
    yield
    key_cache.clear()


@pytest.fixture
def server_key(production) -> str:
    from controlplane.apikeys.services import apikey_create

    _key, raw = apikey_create(
        actor=SYSTEM, name="checkout-app", scope="server", environment=production
    )
    return raw


def _event(**fields) -> dict:
    event = {
        "merchant": "m-1001",
        "outcome": "failure",
        "duration_ms": 31.5,
        "occurred_at": timezone.now().isoformat(),
        "name": "checkout",
        "flags": {"sequential_workflow": "on", "checkout_theme": "dark"},
    }
    event.update(fields)
    return {k: v for k, v in event.items() if v is not None}


def _post(client, events: list, key: str):
    return client.post(
        URL,
        data=json.dumps({"events": events}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )


def _rows() -> list[tuple]:
    return sorted(
        OutcomeEvent.objects.values_list(
            "flag_key", "variation", "merchant_key", "outcome", "duration_ms", "name"
        )
    )


def test_events_flags__two_flags__one_row_per_flag_same_fields(
    client, server_key, production
):
    # Given
    event = _event(id="req-1")
    # When
    response = _post(client, [event], server_key)
    # Then
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 1}
    assert _rows() == [
        ("checkout_theme", "dark", "m-1001", "failure", 31.5, "checkout"),
        ("sequential_workflow", "on", "m-1001", "failure", 31.5, "checkout"),
    ]
    rows = OutcomeEvent.objects.filter(environment=production)
    assert {row.event_id for row in rows} == {"req-1"}
    assert len({row.occurred_at for row in rows}) == 1


def test_events_flags__flag_and_flags_consistent__each_flag_stored_once(
    client, server_key
):
    # Given: flag repeated in flags with the same variation, plus one more flag
    events = [
        _event(flag="sequential_workflow", variation="on"),
        _event(flag="enable_supplier_policy", variation="off", merchant="m-2"),
    ]
    # When
    response = _post(client, events, server_key)
    # Then
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 2}
    stored = sorted(
        OutcomeEvent.objects.values_list("merchant_key", "flag_key", "variation")
    )
    assert stored == [
        ("m-1001", "checkout_theme", "dark"),
        ("m-1001", "sequential_workflow", "on"),
        ("m-2", "checkout_theme", "dark"),
        ("m-2", "enable_supplier_policy", "off"),
        ("m-2", "sequential_workflow", "on"),
    ]


def test_events_flags__flag_variation_conflicts_with_flags__400_nothing_stored(
    client, server_key
):
    # Given
    events = [_event(), _event(flag="sequential_workflow", variation="off")]
    # When
    response = _post(client, events, server_key)
    # Then
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert list(errors) == ["events[1].flags"]
    assert "another variation" in errors["events[1].flags"][0]
    assert OutcomeEvent.objects.count() == 0


def test_events_flags__more_than_20_flags__400(client, server_key):
    # Given
    flags = {f"flag_{i:02d}": "on" for i in range(21)}
    # When
    response = _post(client, [_event(flags=flags)], server_key)
    # Then
    assert response.status_code == 400, response.content
    assert response.json()["errors"] == {
        "events[0].flags": ["at most 20 flags per event"]
    }
    assert OutcomeEvent.objects.count() == 0


def test_events_flags__exactly_20_flags__20_rows(client, server_key):
    # Given
    flags = {f"flag_{i:02d}": "on" for i in range(20)}
    # When
    response = _post(client, [_event(flags=flags)], server_key)
    # Then
    assert response.status_code == 202, response.content
    assert OutcomeEvent.objects.count() == 20


@pytest.mark.parametrize(
    "flags, field",
    [
        ({"bad key!": "on"}, "events[0].flags.bad key!"),
        ({"sequential_workflow": "o n"}, "events[0].flags.sequential_workflow"),
        ({"sequential_workflow": 1}, "events[0].flags.sequential_workflow"),
        ({"sequential_workflow": ""}, "events[0].flags.sequential_workflow"),
        ({"x" * 101: "on"}, f"events[0].flags.{'x' * 100}"),
        ({}, "events[0].flags"),
        (["sequential_workflow"], "events[0].flags"),
    ],
)
def test_events_flags__bad_flags__400_naming_the_key(client, server_key, flags, field):
    # Given
    event = _event(flags=flags)
    # When
    response = _post(client, [event], server_key)
    # Then
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == [field]
    assert OutcomeEvent.objects.count() == 0


def test_events_flags__no_flag_and_no_flags__400_flag_required(client, server_key):
    # Given
    event = _event(flags=None)
    # When
    response = _post(client, [event], server_key)
    # Then
    assert response.status_code == 400, response.content
    assert list(response.json()["errors"]) == ["events[0].flag"]


def test_events_flags__batch_sent_again_with_ids__stored_once_per_flag(
    client, server_key
):
    # Given: a batch whose answer was lost, sent again with the same ids
    events = [_event(id="req-1"), _event(id="req-2", merchant="m-2")]
    first = _post(client, events, server_key)
    # When
    again = _post(client, events, server_key)
    # Then
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == {"accepted": 2}
    assert OutcomeEvent.objects.count() == 4
    assert sorted(OutcomeEvent.objects.values_list("event_id", "flag_key")) == [
        ("req-1", "checkout_theme"),
        ("req-1", "sequential_workflow"),
        ("req-2", "checkout_theme"),
        ("req-2", "sequential_workflow"),
    ]


def test_events_flags__same_id_split_over_two_events__one_row_per_flag(
    client, server_key
):
    # Given: a request that served more than 20 flags, sent as two events
    # sharing one id (what flags.client_events does)
    first = {f"flag_{i:02d}": "on" for i in range(20)}
    events = [_event(id="req-9", flags=first), _event(id="req-9", flags={"z": "v"})]
    # When
    response = _post(client, events, server_key)
    again = _post(client, events, server_key)
    # Then
    assert (response.status_code, again.status_code) == (202, 202)
    assert OutcomeEvent.objects.filter(event_id="req-9").count() == 21
