"""Outcome events with an id are stored once per environment: a batch sent
again (a relay retrying after a lost answer) is not counted twice."""

from __future__ import annotations

import json

import pytest
from django.utils import timezone

from canary.models import OutcomeEvent
from canary.services.outcomes import EventsInvalid, outcome_events_ingest
from controlplane.apikeys.cache import key_cache
from controlplane.audit.actors import SYSTEM
from flags import services

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
        actor=SYSTEM, name="relay", scope="server", environment=production
    )
    return raw


def _event(event_id: str | None, **overrides) -> dict:
    event = {
        "flag": "sw",
        "merchant": "m-1",
        "variation": "on",
        "outcome": "success",
        "occurred_at": timezone.now().isoformat(),
    }
    if event_id is not None:
        event["id"] = event_id
    return {**event, **overrides}


def test_ingest__same_ids_sent_twice__stored_once(db, production):
    # Given
    batch = [_event("a1"), _event("a2", outcome="failure")]
    # When
    first = outcome_events_ingest(environment=production, events=batch)
    again = outcome_events_ingest(environment=production, events=batch)
    # Then
    assert (first, again) == (2, 2)
    assert sorted(OutcomeEvent.objects.values_list("event_id", flat=True)) == [
        "a1",
        "a2",
    ]


def test_ingest__same_id_twice_in_one_batch__one_row(db, production):
    # When
    outcome_events_ingest(environment=production, events=[_event("dup"), _event("dup")])
    # Then
    assert OutcomeEvent.objects.count() == 1


def test_ingest__same_id_in_two_environments__one_row_each(db, production):
    # Given
    staging = services.environment_create(actor=SYSTEM, key="qa", name="QA")
    # When
    outcome_events_ingest(environment=production, events=[_event("x")])
    outcome_events_ingest(environment=staging, events=[_event("x")])
    # Then
    assert OutcomeEvent.objects.count() == 2


def test_ingest__events_without_ids__each_stored(db, production):
    # When
    outcome_events_ingest(environment=production, events=[_event(None)] * 3)
    outcome_events_ingest(
        environment=production, events=[_event(None), _event("with-id")]
    )
    # Then
    assert OutcomeEvent.objects.count() == 5
    assert OutcomeEvent.objects.filter(event_id__isnull=True).count() == 4


@pytest.mark.parametrize("bad", ["", "has space", "x" * 65, 12])
def test_ingest__bad_id__field_error_nothing_stored(db, production, bad):
    # When
    event = _event(None)
    event["id"] = bad
    if bad == "":
        outcome_events_ingest(environment=production, events=[event])
        assert OutcomeEvent.objects.count() == 1  # empty = no id
        return
    with pytest.raises(EventsInvalid) as caught:
        outcome_events_ingest(environment=production, events=[event])
    # Then
    assert "events[0].id" in caught.value.errors
    assert OutcomeEvent.objects.count() == 0


def test_events_api__batch_retried__202_both_times_rows_once(
    client, server_key, production
):
    # Given
    body = json.dumps({"events": [_event("r1"), _event("r2")]})
    headers = {"HTTP_AUTHORIZATION": f"Bearer {server_key}"}
    # When
    answers = [
        client.post(URL, data=body, content_type="application/json", **headers)
        for _ in range(2)
    ]
    # Then
    assert [answer.status_code for answer in answers] == [202, 202]
    assert [answer.json() for answer in answers] == [{"accepted": 2}] * 2
    assert OutcomeEvent.objects.count() == 2
