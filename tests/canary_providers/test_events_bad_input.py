"""POST /api/v1/events with bad input: a field-level 400 and nothing stored,
on the real database (PostgreSQL cannot store a lone surrogate or NUL)."""

from __future__ import annotations

import pytest

from canary.models import OutcomeEvent
from tests.canary_providers.test_events_api import (
    _fresh_key_cache,  # noqa: F401
    server_key,  # noqa: F401
)

URL = "/api/v1/events"
GOOD = (
    '{"flag": "sequential_workflow", "merchant": "m-1", "variation": "on",'
    ' "outcome": "success"}'
)


def _events(*bad: str) -> str:
    return '{"events": [' + ", ".join([GOOD, *bad]) + "]}"


@pytest.mark.parametrize(
    "body, field",
    [
        (_events(GOOD.replace('"success"', "{}")), "events[1].outcome"),
        (_events(GOOD.replace('"success"', "[]")), "events[1].outcome"),
        (_events(GOOD.replace('"m-1"', '"m-\\ud800"')), "events[1].merchant"),
        (_events(GOOD.replace('"m-1"', '"m-\\u0000"')), "events[1].merchant"),
        (  # the surrogate as raw (invalid) UTF-8 bytes, not an escape
            _events(GOOD.replace('"m-1"', '"m-\xed\xa0\x80"')).encode("latin-1"),
            "events[1].merchant",
        ),
        (_events(GOOD.replace("}", ', "name": "\\udfff"}')), "events[1].name"),
        # too deep: the path of the container past the limit is named
        ('{"events": ' + "[" * 5000 + "]" * 5000 + "}", "events[0][0]"),
    ],
)
def test_events_api__bad_input__400_field_and_nothing_stored(
    client, server_key, body, field
):
    # When
    response = client.post(
        URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {server_key}",
    )
    # Then
    assert response.status_code == 400, response.content
    errors = response.json()["errors"]
    assert any(name == field or name.startswith(field + "[") for name in errors), errors
    assert OutcomeEvent.objects.count() == 0


def test_events_api__declared_length_over_limit__413_json(client, server_key, settings):
    # Given
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "OUTCOME_EVENTS_MAX_BODY_BYTES": 1000,
    }
    body = _events(*[GOOD] * 20)
    # When
    response = client.post(
        URL,
        data=body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {server_key}",
    )
    # Then
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"
    assert response.json()["errors"]["body"]
    assert OutcomeEvent.objects.count() == 0
