"""Fixtures for the serving side (import them into a test module).

The ruleset store and the key cache are process-wide; every test starts with
both empty, since each test's database is rolled back.
"""

from __future__ import annotations

import pytest

from controlplane.audit.actors import SYSTEM


@pytest.fixture
def serving_reset():
    from controlplane.apikeys.cache import key_cache
    from flags.snapshot import store

    store().clear()
    key_cache.clear()
    yield
    store().clear()
    key_cache.clear()


@pytest.fixture
def server_key_factory(db, serving_reset):
    from controlplane.apikeys.services import apikey_create

    def make(environment, name: str = "checkout-service"):
        api_key, raw = apikey_create(
            actor=SYSTEM, name=name, scope="server", environment=environment
        )
        return raw

    return make


@pytest.fixture
def server_key(production, server_key_factory) -> str:
    return server_key_factory(production)


@pytest.fixture
def auth(server_key) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": f"Bearer {server_key}"}


@pytest.fixture
def catalog(production, flag_factory, merchant_factory):
    """The DESIGN's flags in production: bool, number, string split, json."""
    from flags import services

    merchant_factory("m-gold", attributes={"tier": "gold", "country": "KR"})
    merchant_factory("m-pilot", attributes={"tier": "silver"})
    workflow = flag_factory("sequential_workflow")
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=workflow, environment=production, enabled=True
    )
    from flags.models import Merchant

    services.override_set(
        actor=SYSTEM,
        flag=workflow,
        environment=production,
        merchant=Merchant.objects.get(key="m-pilot"),
        variation="on",
    )
    timeout = flag_factory(
        "policy_resolution_timeout_ms",
        value_type="number",
        variations=[{"key": "fast", "value": 100}, {"key": "slow", "value": 250.5}],
    )
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=timeout, environment=production, enabled=True
    )
    services.flag_state_serve(
        actor=SYSTEM, flag=timeout, environment=production, variation="fast"
    )
    theme = flag_factory(
        "checkout_theme",
        value_type="string",
        variations=[
            {"key": "classic", "value": "classic"},
            {"key": "dark", "value": "dark"},
        ],
    )
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=theme, environment=production, enabled=True
    )
    services.flag_state_set_percentage(
        actor=SYSTEM,
        flag=theme,
        environment=production,
        percentage=50,
        treatment="dark",
        control="classic",
    )
    layout = flag_factory(
        "checkout_layout",
        value_type="json",
        variations=[
            {"key": "v1", "value": {"columns": 1}},
            {"key": "v2", "value": {"columns": 2, "sidebar": True}},
        ],
    )
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=layout, environment=production, enabled=True
    )
    services.flag_state_update(
        actor=SYSTEM,
        flag=layout,
        environment=production,
        expected_version=None,
        rules=[
            {
                "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
                "serve": {"variation": "v2"},
            }
        ],
    )
    services.flag_state_serve(
        actor=SYSTEM, flag=layout, environment=production, variation="v1"
    )
    return {"workflow": workflow, "timeout": timeout, "theme": theme, "layout": layout}
