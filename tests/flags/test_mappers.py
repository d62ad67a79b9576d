"""ORM rows -> engine data: what the serving processes compile."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from flags import engine, mappers, services
from flags.models import Environment, MerchantOverride


def test_ruleset_data__archived_flag__left_out(production, flag_factory, actor):
    # Given
    live = flag_factory("live_flag")
    archived = flag_factory("old_flag")
    services.flag_archive(actor=actor, flag=archived)
    # When
    data = mappers.ruleset_data(production)
    ruleset = engine.compile_ruleset(data)
    # Then
    assert [flag["key"] for flag in data["flags"]] == [live.key]
    assert (
        engine.evaluate(ruleset, "old_flag", {"merchant": "m"}).error_code
        == "FLAG_NOT_FOUND"
    )


def test_ruleset_data__expired_override__left_out(
    production, flag_factory, merchant_factory, actor
):
    # Given one override past its expiry and one in force
    flag = flag_factory("sequential_workflow")
    expired, live = merchant_factory("m-expired"), merchant_factory("m-live")
    for merchant in (expired, live):
        services.override_set(
            actor=actor,
            flag=flag,
            environment=production,
            merchant=merchant,
            variation="on",
            expires_at=timezone.now() + dt.timedelta(hours=1),
        )
    # time passes for one of them (the service refuses a past expiry)
    MerchantOverride.objects.filter(merchant=expired).update(
        expires_at=timezone.now() - dt.timedelta(seconds=1)
    )
    # When
    data = mappers.ruleset_data(production)
    # Then
    (flag_data,) = data["flags"]
    assert [o["merchant"] for o in flag_data["overrides"]] == ["m-live"]
    assert flag_data["overrides"][0]["expires_at"] > timezone.now().timestamp()


def test_ruleset_data__environment__version_state_and_registry(
    production, flag_factory, merchant_factory, actor
):
    # Given
    flag = flag_factory("sequential_workflow")
    merchant_factory("m-gold", attributes={"tier": "gold"})
    merchant_factory("m-plain")
    merchant_factory("m-gone", attributes={"tier": "gold"}, is_active=False)
    services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=production, percentage=10
    )
    # When
    data = mappers.ruleset_data(production)
    # Then
    assert data["environment"] == "production"
    assert data["version"] == Environment.objects.get(pk=production.pk).ruleset_version
    assert data["merchants"] == {"m-gold": {"tier": "gold"}}
    (flag_data,) = data["flags"]
    assert flag_data["fallthrough"]["split"][0] == {"variation": "on", "weight": 10_000}
    assert flag_data["state_version"] == 2


def test_ruleset_compile__segment_rule__registry_attributes_match(
    production, flag_factory, merchant_factory, actor
):
    # Given
    flag = flag_factory("enable_supplier_policy")
    merchant_factory("m-gold", attributes={"tier": "gold"})
    services.segment_create(
        actor=actor,
        key="gold-tier",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    services.flag_state_update(
        actor=actor,
        flag=flag,
        environment=production,
        expected_version=1,
        enabled=True,
        rules=[
            {
                "clauses": [{"op": "segment", "values": ["gold-tier"]}],
                "serve": {"variation": "on"},
            }
        ],
    )
    # When
    ruleset = mappers.ruleset_compile(production)
    # Then
    gold = engine.evaluate(ruleset, flag.key, {"merchant": "m-gold"})
    stranger = engine.evaluate(ruleset, flag.key, {"merchant": "m-unknown"})
    assert (gold.value, gold.reason, gold.level) == (True, "TARGETING_MATCH", "rule:1")
    assert (stranger.value, stranger.level) == (False, "default")
