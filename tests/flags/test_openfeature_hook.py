"""The OpenFeature hook with the real SDK and OFREP provider, live server.

The app evaluates through ``openfeature-sdk`` + ``openfeature-provider-ofrep``
against the project's OFREP endpoint; the hook records the flags served
into the current request scope and the scope's outcome event reaches
``POST /api/v1/events`` through the client's sender.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from canary.models import OutcomeEvent
from flags.client_events import EventSender, current_scope
from flags.openfeature_hook import OutcomeHook
from tests.apikeys.fixtures import (  # noqa: F401
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def sender(live_server, server_key):
    sender = EventSender(live_server.url, server_key, flush_interval=0.05)
    yield sender
    sender.close()


@pytest.fixture
def hook(sender) -> OutcomeHook:
    return OutcomeHook(sender)


@pytest.fixture
def of_client(live_server, catalog, server_key, hook):
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    provider = OFREPProvider(
        live_server.url,
        headers_factory=lambda: {"Authorization": f"Bearer {server_key}"},
        timeout=5,
    )
    api.set_provider(provider, domain="tests-outcome-hook")
    client = api.get_client(domain="tests-outcome-hook")
    client.add_hooks([hook])
    yield client
    api.clear_providers()


def _context(merchant: str, **attributes):
    from openfeature.evaluation_context import EvaluationContext

    return EvaluationContext(targeting_key=merchant, attributes=attributes)


def test_outcome_hook__ofrep_evaluations__one_row_per_flag_with_variants(
    of_client, hook, sender, production
):
    # Given
    gold = _context("m-gold", tier="gold")
    with hook.request(name="checkout") as scope:
        # When
        workflow = of_client.get_boolean_details("sequential_workflow", False, gold)
        layout = of_client.get_object_details("checkout_layout", {}, gold)
        timeout = of_client.get_integer_details("policy_resolution_timeout_ms", 1, gold)
        missing = of_client.get_boolean_details("no_such_flag", True, gold)
    delivered = sender.close()
    # Then: the missing flag served the default and no variant
    assert delivered is True
    assert missing.variant is None and missing.value is True
    assert scope.merchant == "m-gold"  # from the targetingKey
    rows = OutcomeEvent.objects.filter(environment=production)
    served = {d.flag_key: d.variant for d in (workflow, layout, timeout)}
    assert {row.flag_key: row.variation for row in rows} == served
    assert served["checkout_layout"] == "v2"
    assert {(r.merchant_key, r.outcome, r.name, r.event_id) for r in rows} == {
        ("m-gold", "success", "checkout", scope.id)
    }


def test_outcome_hook__exception_in_scope__failure_reported_and_reraised(
    of_client, hook, sender
):
    # Given
    with pytest.raises(RuntimeError):
        with hook.request("m-pilot"):
            of_client.get_boolean_value(
                "sequential_workflow", False, _context("m-pilot")
            )
            # When
            raise RuntimeError("checkout failed")
    sender.close()
    # Then
    row = OutcomeEvent.objects.get()
    assert (row.flag_key, row.variation, row.merchant_key, row.outcome) == (
        "sequential_workflow",
        "on",
        "m-pilot",
        "failure",
    )


def test_outcome_hook__report__outcome_and_duration_given(of_client, hook, sender):
    # Given
    with hook.request("m-1"):
        of_client.get_string_value("checkout_theme", "none", _context("m-1"))
        # When
        events = hook.report("failure", duration_ms=42)
    sender.close()
    # Then
    assert len(events) == 1
    row = OutcomeEvent.objects.get()
    assert (row.flag_key, row.outcome, row.duration_ms) == (
        "checkout_theme",
        "failure",
        42.0,
    )


def test_outcome_hook__other_targeting_key__not_recorded(of_client, hook, sender):
    # Given
    with hook.request("m-1") as scope:
        # When
        of_client.get_boolean_value("sequential_workflow", False, _context("m-2"))
        of_client.get_string_value("checkout_theme", "none", _context("m-1"))
    sender.close()
    # Then
    assert scope.flags.keys() == {"checkout_theme"}
    assert list(OutcomeEvent.objects.values_list("flag_key", "merchant_key")) == [
        ("checkout_theme", "m-1")
    ]


def test_outcome_hook__no_scope__evaluation_unaffected_nothing_sent(
    of_client, hook, sender
):
    # Given: no request scope is open
    assert current_scope() is None
    # When
    value = of_client.get_boolean_value(
        "sequential_workflow", False, _context("m-pilot")
    )
    reported = hook.report("success")
    # Then
    assert value is True and reported == []
    assert sender.close() is True
    assert OutcomeEvent.objects.count() == 0


def test_outcome_hook__concurrent_requests__each_scope_its_own_flags(
    of_client, hook, sender
):
    # Given: two threads, each in its own request scope (contextvars)
    scopes = {}

    def serve(merchant: str, flag: str, default: object) -> None:
        with hook.request(merchant) as scope:
            if isinstance(default, str):
                of_client.get_string_value(flag, default, _context(merchant))
            else:
                of_client.get_object_value(flag, default, _context(merchant))
        scopes[merchant] = scope

    threads = [
        threading.Thread(target=serve, args=("m-a", "checkout_theme", "none")),
        threading.Thread(target=serve, args=("m-b", "checkout_layout", {})),
    ]
    # When
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    sender.close()
    # Then
    assert scopes["m-a"].flags.keys() == {"checkout_theme"}
    assert scopes["m-b"].flags.keys() == {"checkout_layout"}
    assert sorted(OutcomeEvent.objects.values_list("merchant_key", "flag_key")) == [
        ("m-a", "checkout_theme"),
        ("m-b", "checkout_layout"),
    ]


def test_outcome_hook__async_tasks__each_scope_its_own_flags(of_client, hook, sender):
    # Given: asyncio tasks copy the context; each opens its own scope
    async def serve(merchant: str, flag: str, default: object):
        with hook.request(merchant) as scope:
            if isinstance(default, str):
                get = of_client.get_string_value_async
            else:
                get = of_client.get_object_value_async
            await get(flag, default, _context(merchant))
            await asyncio.sleep(0)
        return scope

    async def main():
        return await asyncio.gather(
            serve("m-a", "checkout_theme", "none"),
            serve("m-b", "checkout_layout", {}),
        )

    # When
    first, second = asyncio.run(main())
    sender.close()
    # Then
    assert first.flags.keys() == {"checkout_theme"}
    assert second.flags.keys() == {"checkout_layout"}
    assert OutcomeEvent.objects.count() == 2


def test_outcome_hook__without_sender__request_refused():
    # Given
    hook = OutcomeHook()
    # When / Then
    with pytest.raises(ValueError, match="sender"):
        hook.request("m-1")
