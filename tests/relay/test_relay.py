"""A control plane and two relays on loopback, as real processes.

The relays run with ``DATABASE_URL`` pointing at a server that does not
exist: they never touch a database.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.relay.harness import ControlPlane, Relay, http, wait_until

pytestmark = [pytest.mark.slow]

BOUND = 5.0  # seconds; the benchmark measures the real figure (bench/propagation.py)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    tmp = tmp_path_factory.mktemp("relay")
    upstream = ControlPlane(tmp)
    relays = [Relay(upstream, tmp / f"relay-{n}") for n in range(2)]
    try:
        upstream.start()
        for relay in relays:
            relay.start()
        yield upstream, relays
    finally:
        for relay in relays:
            relay.close()
        upstream.close()


def _answered(relay: Relay, variation: str) -> bool:
    status, body = relay.evaluate()
    return status == 200 and body["flags"][0]["variation"] == variation


def test_relay__change_on_control_plane__both_relays_answer_it_soon(cluster):
    # Given
    upstream, relays = cluster
    for change in range(6):
        variation = "on" if change % 2 == 0 else "off"
        # When
        upstream.serve(variation)
        started = time.monotonic()
        # Then
        for relay in relays:
            wait_until(
                lambda r=relay, v=variation: _answered(r, v), BOUND, "the change"
            )
        assert time.monotonic() - started < BOUND


def test_relay__evaluation_routes__same_answers_as_the_control_plane(cluster):
    # Given
    upstream, relays = cluster
    key = upstream.keys["client"]
    context = {"context": {"targetingKey": "m-7"}}
    wait_until(
        lambda: (
            relays[0].health()["version"]
            == http("POST", f"{upstream.url}/api/v1/evaluate", key, context)[2][
                "version"
            ]
        ),
        BOUND,
        "the relay to follow",
    )
    for path in ("/api/v1/evaluate", "/ofrep/v1/evaluate/flags/sw"):
        # When
        direct = http("POST", upstream.url + path, key, context)
        relayed = http("POST", relays[0].url + path, key, context)
        # Then
        assert relayed[0] == direct[0] == 200
        assert relayed[2] == direct[2]
    status, headers, bulk = http(
        "POST", relays[0].url + "/ofrep/v1/evaluate/flags", key, context
    )
    assert status == 200 and bulk["flags"][0]["key"] == "sw"
    status, _h, _b = http(
        "POST",
        relays[0].url + "/ofrep/v1/evaluate/flags",
        key,
        context,
        headers={"If-None-Match": headers["etag"]},
    )
    assert status == 304
    status, _h, data = http(
        "GET", relays[0].url + "/api/v1/environments/production/ruleset", key
    )
    assert status == 200 and [flag["key"] for flag in data["flags"]] == ["sw"]


def test_relay__unknown_key__401_and_management_key__403(cluster):
    # Given
    upstream, relays = cluster
    # When
    unknown, _body = relays[0].evaluate(key="cp_srv_not-a-key")
    management, _body = relays[0].evaluate(key=upstream.keys["manage"])
    missing = http("POST", relays[0].url + "/api/v1/evaluate", None, {})[0]
    # Then
    assert (unknown, management, missing) == (401, 403, 401)


def test_relay__bad_events__400_with_field_and_nothing_kept(cluster):
    # Given
    upstream, relays = cluster
    before = relays[0].health()["events_pending"]
    # When
    status, _h, body = http(
        "POST",
        relays[0].url + "/api/v1/events",
        upstream.keys["client"],
        {"events": [{"flag": "sw", "merchant": "m-1", "outcome": "maybe"}]},
    )
    # Then
    assert status == 400
    assert "events[0].outcome" in body["errors"]
    assert relays[0].health()["events_pending"] == before


def test_relay__control_plane_down__stale_answers_events_kept_then_caught_up(
    cluster, tmp_path: Path
):
    # Given
    upstream, relays = cluster
    rows_before, _ids = upstream.count_events()
    upstream.stop()
    # When: the control plane is down
    for relay in relays:
        wait_until(lambda r=relay: r.evaluate()[1]["stale"], BOUND, "stale answers")
    event = {"flag": "sw", "merchant": "m-1", "variation": "on", "outcome": "success"}
    for relay in relays:
        for _ in range(5):
            status, _h, body = http(
                "POST",
                relay.url + "/api/v1/events",
                upstream.keys["client"],
                {"events": [event, {**event, "outcome": "failure"}]},
            )
            assert (status, body) == (202, {"accepted": 2})
    # a relay restarted during the outage serves from disk, marked stale
    relays[1].stop()
    relays[1].start(wait_version=False)
    status, body = relays[1].evaluate()
    assert status == 200 and body["stale"] is True  # its key was kept, hashed
    assert relays[1].evaluate(key="cp_srv_never-seen")[0] == 503
    assert relays[1].health()["events_pending"] == 10
    # Then: back up, the relays catch up and deliver every event once
    upstream.start()
    upstream.serve("on")
    upstream.serve("off")
    for relay in relays:
        wait_until(lambda r=relay: _answered(r, "off"), BOUND, "the catch-up")
        wait_until(lambda r=relay: not r.evaluate()[1]["stale"], BOUND, "fresh answers")
        wait_until(
            lambda r=relay: r.health()["events_pending"] == 0, BOUND, "the outbox"
        )
    rows, ids = upstream.count_events()
    assert rows - rows_before == 20
    assert ids == rows
