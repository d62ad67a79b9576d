"""POST /api/v1/events through Django's test client with real server keys."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from canary.models import OutcomeEvent
from controlplane.apikeys.cache import key_cache
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent

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


def _event(**overrides) -> dict:
    event = {
        "flag": "sequential_workflow",
        "merchant": "m-1",
        "variation": "on",
        "outcome": "success",
        "duration_ms": 12.5,
        "occurred_at": timezone.now().isoformat(),
        "name": "checkout",
    }
    event.update(overrides)
    return {k: v for k, v in event.items() if v is not None}


def _post(client, body, key: str | None, content_type: str = "application/json"):
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"} if key else {}
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(URL, data=data, content_type=content_type, **headers)


def test_events_api__valid_batch__202_and_rows_stored(client, server_key, production):
    # Given
    events = [
        _event(merchant=f"m-{i}", outcome="failure" if i % 4 == 0 else "success")
        for i in range(20)
    ]
    audit_before = AuditEvent.objects.count()
    # When
    response = _post(client, {"events": events}, server_key)
    # Then
    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 20}
    rows = OutcomeEvent.objects.filter(environment=production)
    assert rows.count() == 20
    assert rows.filter(outcome="failure").count() == 5
    first = rows.get(merchant_key="m-3")
    assert (first.flag_key, first.variation, first.duration_ms, first.name) == (
        "sequential_workflow",
        "on",
        12.5,
        "checkout",
    )
    assert AuditEvent.objects.count() == audit_before  # telemetry, not changes


def test_events_api__optional_fields_absent__defaults(client, server_key):
    # Given
    event = _event(duration_ms=None, occurred_at=None, name=None)
    # When
    response = _post(client, {"events": [event]}, server_key)
    # Then
    assert response.status_code == 202
    row = OutcomeEvent.objects.get()
    assert row.duration_ms is None and row.name == ""
    assert abs((timezone.now() - row.occurred_at).total_seconds()) < 60


def test_events_api__not_json__400(client, server_key):
    # When
    response = _post(client, '{"events": [', server_key)
    # Then
    assert response.status_code == 400
    assert response.json()["code"] == "parse_error"


def test_events_api__nan_duration__400_naming_the_field(client, server_key):
    # When
    response = _post(client, '{"events": [{"duration_ms": NaN}]}', server_key)
    # Then
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert "events[0].duration_ms" in response.json()["errors"]


@pytest.mark.parametrize(
    "body, field",
    [
        ([_event()], "events"),
        ({"items": []}, "events"),
        ({"events": "many"}, "events"),
        ({"events": []}, "events"),
    ],
)
def test_events_api__bad_envelope__400(client, server_key, body, field):
    # When
    response = _post(client, body, server_key)
    # Then
    assert response.status_code == 400
    assert field in response.json()["errors"]


@pytest.mark.parametrize(
    "event, field",
    [
        (_event(flag=None), "events[1].flag"),
        (_event(merchant=None), "events[1].merchant"),
        (_event(variation=None), "events[1].variation"),
        (_event(outcome=None), "events[1].outcome"),
        (_event(outcome="ok"), "events[1].outcome"),
        (_event(duration_ms=-1), "events[1].duration_ms"),
        (_event(duration_ms="fast"), "events[1].duration_ms"),
        (_event(occurred_at="yesterday"), "events[1].occurred_at"),
        (
            _event(occurred_at=(timezone.now() + timedelta(hours=2)).isoformat()),
            "events[1].occurred_at",
        ),
        (_event(merchant="x" * 129), "events[1].merchant"),
        (_event(merchant="acme\x00"), "events[1].merchant"),
        (_event(flag="no spaces"), "events[1].flag"),
        (_event(duration_ms=10**400), "events[1].duration_ms"),
        (_event(occurred_at=10**400), "events[1].occurred_at"),
        ({**_event(), "duration": 3}, "events[1].duration"),
        ("not an object", "events[1]"),
    ],
)
def test_events_api__bad_event__400_with_field_and_nothing_stored(
    client, server_key, event, field
):
    # Given: one good event before and after the bad one
    body = {"events": [_event(), event, _event()]}
    # When
    response = _post(client, body, server_key)
    # Then
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert list(errors) == [field]
    assert "nothing was stored" in response.json()["message"]
    assert OutcomeEvent.objects.count() == 0


def test_events_api__free_text_merchant_key__accepted(client, server_key):
    # When
    response = _post(
        client, {"events": [_event(merchant="Acme Shop #7 (KR)")]}, server_key
    )
    # Then
    assert response.status_code == 202
    assert OutcomeEvent.objects.get().merchant_key == "Acme Shop #7 (KR)"


def test_events_api__several_bad_events__each_reported(client, server_key):
    # Given
    body = {
        "events": [_event(outcome="meh"), _event(), _event(duration_ms=-5, flag=None)]
    }
    # When
    response = _post(client, body, server_key)
    # Then
    assert response.status_code == 400
    assert set(response.json()["errors"]) == {
        "events[0].outcome",
        "events[2].flag",
        "events[2].duration_ms",
    }


def test_events_api__too_many_events__400(client, server_key, settings):
    # Given
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "OUTCOME_EVENTS_MAX_BATCH": 10}
    # When
    response = _post(client, {"events": [_event()] * 11}, server_key)
    # Then
    assert response.status_code == 400
    assert "at most 10 events" in response.json()["errors"]["events"][0]
    assert OutcomeEvent.objects.count() == 0


def test_events_api__no_key__401(client, production):
    # When
    response = _post(client, {"events": [_event()]}, None)
    # Then
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert OutcomeEvent.objects.count() == 0


def test_events_api__wrong_key__401(client, server_key):
    # When
    response = _post(client, {"events": [_event()]}, server_key[:-4] + "XXXX")
    # Then
    assert response.status_code == 401
    assert OutcomeEvent.objects.count() == 0


def test_events_api__management_key__403(client, production, django_user_model):
    # Given
    from controlplane.apikeys.services import apikey_create

    user = django_user_model.objects.create_user("ci-bot")
    _key, raw = apikey_create(actor=SYSTEM, name="ci", scope="management", user=user)
    # When
    response = _post(client, {"events": [_event()]}, raw)
    # Then
    assert response.status_code == 403
    assert OutcomeEvent.objects.count() == 0


def test_events_api__staging_key__stored_in_staging(client, environments):
    # Given
    from controlplane.apikeys.services import apikey_create

    _key, raw = apikey_create(
        actor=SYSTEM,
        name="staging-app",
        scope="server",
        environment=environments["staging"],
    )
    # When
    response = _post(client, {"events": [_event(), _event()]}, raw)
    # Then
    assert response.status_code == 202
    assert OutcomeEvent.objects.filter(environment__key="staging").count() == 2
    assert OutcomeEvent.objects.filter(environment__key="production").count() == 0
