"""The Python client's request scope and event sender against a live server.

Events are posted over real HTTP to Django's live server (or to a tiny
local server standing in for one) and end up as OutcomeEvent rows, one per
flag, with the variations the client served.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from canary.models import OutcomeEvent
from flags.client import FlagsClient
from flags.client_events import EventSender, RequestScope, current_scope
from tests.apikeys.fixtures import (  # noqa: F401
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)
from tests.flags.events_servers import LosingProxy, RecordingServer

ROOT = Path(__file__).resolve().parents[2]


def _client(url: str, key: str, **kwargs) -> FlagsClient:
    return FlagsClient(url, key, "production", stream=False, poll_interval=60, **kwargs)


def _event(event_id: str, **fields) -> dict:
    return {
        "id": event_id,
        "merchant": "m-1",
        "flags": {"sequential_workflow": "on"},
        "outcome": "success",
        **fields,
    }


@pytest.mark.slow
def test_client_request__flags_served__one_row_per_flag_with_variations(
    live_server, catalog, server_key, production
):
    # Given
    with _client(live_server.url, server_key) as client:
        with client.request("m-gold", {"tier": "gold"}, name="checkout") as req:
            # When
            workflow = req.evaluate("sequential_workflow", False, value_type="bool")
            theme = req.evaluate("checkout_theme", "none", value_type="string")
            layout = req.evaluate("checkout_layout", {}, value_type="json")
            missing = req.evaluate("no_such_flag", True, value_type="bool")
        events = req.events
    # Then: close() flushed; the unknown flag served no variation
    assert missing.variation is None
    rows = OutcomeEvent.objects.filter(environment=production)
    served = {a.flag_key: a.variation for a in (workflow, theme, layout)}
    assert {row.flag_key: row.variation for row in rows} == served
    assert served["checkout_layout"] == "v2"
    assert {(r.merchant_key, r.outcome, r.name) for r in rows} == {
        ("m-gold", "success", "checkout")
    }
    assert {row.event_id for row in rows} == {events[0]["id"]}
    assert len({row.duration_ms for row in rows}) == 1
    assert 0 <= rows[0].duration_ms < 60_000
    assert client.events.sent == 1 and client.events.pending == 0


@pytest.mark.slow
def test_client_request__exception_in_block__failure_event_and_reraised(
    live_server, catalog, server_key
):
    # Given
    client = _client(live_server.url, server_key)
    # When
    with pytest.raises(ZeroDivisionError):
        with client.request("m-pilot") as req:
            req.bool_value("sequential_workflow", False)
            1 / 0  # noqa: B018
    client.close()
    # Then
    row = OutcomeEvent.objects.get()
    assert (row.flag_key, row.variation, row.merchant_key, row.outcome) == (
        "sequential_workflow",
        "on",
        "m-pilot",
        "failure",
    )
    assert row.event_id == req.id


@pytest.mark.slow
def test_client_request__report_in_block__given_outcome_and_duration_once(
    live_server, catalog, server_key
):
    # Given
    client = _client(live_server.url, server_key)
    with client.request("m-1") as req:
        req.number_value("policy_resolution_timeout_ms", 1)
        # When
        first = req.report("failure", duration_ms=250, name="policy")
        second = req.report("success")
    client.close()
    # Then
    assert len(first) == 1 and second == []
    row = OutcomeEvent.objects.get()
    assert (row.variation, row.outcome, row.duration_ms, row.name) == (
        "fast",
        "failure",
        250.0,
        "policy",
    )


def test_client_request__no_flag_served__nothing_queued():
    # Given
    with RecordingServer() as server:
        sender = EventSender(server.url, "cp_srv_x", flush_interval=0.01)
        scope = RequestScope(sender, "m-1")
        # When
        with scope:
            assert current_scope() is scope
        # Then
        assert current_scope() is None
        assert scope.events == [] and sender.pending == 0
        sender.close()
        assert server.bodies == []


def test_request_scope__other_merchant_and_repeats__first_variation_kept():
    # Given
    with RecordingServer() as server:
        sender = EventSender(server.url, "cp_srv_x")
        scope = RequestScope(sender)
        # When
        kept = [
            scope.record("a", "on", "m-1"),
            scope.record("b", "blue", "m-2"),  # another merchant
            scope.record("a", "off", "m-1"),  # the first answer stays
            scope.record("c", None, "m-1"),  # an error: no variation
            scope.record("d", "x"),
        ]
        events = scope.report("success", duration_ms=1)
        sender.close()
    # Then
    assert kept == [True, False, True, False, True]
    assert [e["flags"] for e in events] == [{"a": "on", "d": "x"}]
    assert events[0]["merchant"] == "m-1"
    assert [e["id"] for e in server.bodies[0]["events"]] == [scope.id]


def test_request_scope__bad_outcome__value_error():
    # Given
    scope = RequestScope(EventSender("http://127.0.0.1:9", "k"), "m-1")
    scope.record("a", "on")
    # When / Then
    with pytest.raises(ValueError, match="outcome"):
        scope.report("maybe")


@pytest.mark.slow
def test_request_scope__more_than_20_flags__events_share_one_id_one_row_each(
    live_server, server_key, production
):
    # Given
    sender = EventSender(live_server.url, server_key, flush_interval=0.05)
    with RequestScope(sender, "m-1") as scope:
        for i in range(45):
            scope.record(f"flag_{i:02d}", "on")
    # When
    delivered = sender.close()
    # Then
    assert delivered is True
    assert [len(e["flags"]) for e in scope.events] == [20, 20, 5]
    rows = OutcomeEvent.objects.filter(environment=production)
    assert rows.count() == 45
    assert set(rows.values_list("event_id", flat=True)) == {scope.id}


@pytest.mark.slow
def test_event_sender__answer_lost_with_503__retried_and_stored_once(
    live_server, catalog, server_key, production
):
    # Given: a proxy that stores the first batch upstream but answers 503
    with LosingProxy(live_server.url, lose=1) as proxy:
        sender = EventSender(proxy.url, server_key, backoff=0.05, flush_interval=0.05)
        client = _client(live_server.url, server_key, events=sender)
        with client.request("m-gold", {"tier": "gold"}) as req:
            req.bool_value("sequential_workflow", False)
            req.string_value("checkout_theme", "none")
        # When
        delivered = sender.close()
        client.close()
    # Then: two posts of the same ids, each stored upstream, one row per flag
    assert delivered is True
    assert proxy.forwarded == [202, 202]
    assert [[e["id"] for e in b["events"]] for b in proxy.bodies] == [[req.id]] * 2
    rows = OutcomeEvent.objects.filter(environment=production)
    assert sorted(rows.values_list("flag_key", "event_id")) == [
        ("checkout_theme", req.id),
        ("sequential_workflow", req.id),
    ]
    assert (sender.sent, sender.failed, sender.rejected) == (1, 0, 0)


def test_event_sender__server_down_then_up__retried_with_backoff():
    # Given: a server that answers 503 twice
    with RecordingServer(status=503) as server:
        sender = EventSender(server.url, "k", backoff=0.05, flush_interval=0.01)
        sender.enqueue(_event("e-1"))
        deadline = time.monotonic() + 5
        while len(server.bodies) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        server.status = 202
        # When
        delivered = sender.flush(timeout=5)
        sender.close()
    # Then
    assert delivered is True
    assert len(server.bodies) >= 3
    assert {b["events"][0]["id"] for b in server.bodies} == {"e-1"}
    assert (sender.sent, sender.failed) == (1, 0)


def test_event_sender__never_answers__given_up_after_max_attempts():
    # Given
    with RecordingServer(status=500) as server:
        sender = EventSender(
            server.url, "k", backoff=0.01, max_attempts=3, flush_interval=0.01
        )
        sender.enqueue(_event("e-1"))
        # When
        delivered = sender.close(timeout=5)
    # Then
    assert delivered is True  # nothing pending: the event was given up
    assert len(server.bodies) == 3
    assert (sender.sent, sender.failed) == (0, 1)
    assert sender.last_error == "HTTP 500"


def test_event_sender__queue_full__oldest_dropped_and_counted():
    # Given: a batch that waits (long interval, large batch)
    with RecordingServer() as server:
        sender = EventSender(
            server.url, "k", max_queue=3, batch_size=100, flush_interval=60
        )
        # When
        for i in range(5):
            sender.enqueue(_event(f"e-{i}"))
        dropped = sender.dropped
        delivered = sender.flush(timeout=5)
        sender.close()
    # Then
    assert dropped == 2
    assert delivered is True
    assert [[e["id"] for e in b["events"]] for b in server.bodies] == [
        ["e-2", "e-3", "e-4"]
    ]


def test_event_sender__batch_size__one_post_per_batch():
    # Given
    with RecordingServer() as server:
        sender = EventSender(server.url, "k", batch_size=2, flush_interval=60)
        # When
        for i in range(5):
            sender.enqueue(_event(f"e-{i}"))
        sender.close()
    # Then
    sizes = [len(body["events"]) for body in server.bodies]
    assert sum(sizes) == 5 and max(sizes) == 2


def test_event_sender__closed__later_events_dropped():
    # Given
    with RecordingServer() as server:
        sender = EventSender(server.url, "k")
        sender.close()
        # When
        sender.enqueue(_event("late"))
    # Then
    assert sender.dropped == 1 and server.bodies == []


@pytest.mark.slow
def test_event_sender__one_event_refused__others_sent_again_and_stored(
    live_server, server_key, production
):
    # Given: the server refuses a whole batch for one bad event
    sender = EventSender(live_server.url, server_key, flush_interval=60)
    sender.enqueue(_event("good-1"))
    sender.enqueue(_event("bad", outcome="maybe"))
    sender.enqueue(_event("good-2"))
    # When
    delivered = sender.close()
    # Then
    assert delivered is True
    assert (sender.sent, sender.rejected) == (2, 1)
    stored = OutcomeEvent.objects.filter(environment=production)
    assert sorted(stored.values_list("event_id", flat=True)) == ["good-1", "good-2"]


@pytest.mark.slow
def test_event_sender__wrong_key__rejected_not_retried(live_server, production):
    # Given
    sender = EventSender(live_server.url, "cp_srv_wrong", flush_interval=0.01)
    sender.enqueue(_event("e-1"))
    # When
    sender.close()
    # Then
    assert (sender.sent, sender.rejected, sender.failed) == (0, 1, 0)
    assert OutcomeEvent.objects.count() == 0


def test_client_modules__imported_alone__no_django():
    # Given
    code = (
        "import sys, flags.client, flags.client_events; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'django'))"
    )
    # When
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    # Then
    assert result.stdout.strip() == "[]"
