"""Stateful schemathesis run against a live server: no sequence is a 5xx.

schemathesis infers links between operations from the schema (a flag listed
by ``GET /flags`` is then read, patched, killed, ...), and walks them as a
state machine over real HTTP on 127.0.0.1 (Django's LiveServer), once with a
management key and once with a server key. Bounded: few scenarios of few
steps each (about 30 s in all); rollback runs are left out (a generated
level-3 run would revert the test database's own migrations).
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from django.contrib.auth.models import User
from hypothesis import HealthCheck, Phase, settings

from controlplane.apikeys.services import apikey_create
from controlplane.audit.actors import SYSTEM
from flags import services

# What a server key may call: evaluation (native, OFREP), events, rulesets.
SERVER_KEY_PATHS = (
    r"^/(ofrep/|api/v1/(evaluate|events)$|api/v1/environments/[^/]+/ruleset)"
)
# Scenarios per key kind and steps per scenario: about 30 s on two cores.
SCENARIOS = 12
STEPS = 5


@pytest.fixture
def keys(transactional_db) -> dict[str, str]:
    """Seeded rows, and the two kinds of key the API knows."""
    from controlplane.apikeys.cache import key_cache
    from flags.snapshot import store

    store().clear()
    key_cache.clear()
    production = services.environment_create(actor=SYSTEM, key="production")
    flag = services.flag_create(actor=SYSTEM, key="checkout_theme")
    merchant = services.merchant_create(
        actor=SYSTEM, key="m-1", attributes={"tier": "gold"}
    )
    services.segment_create(
        actor=SYSTEM,
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
    )
    operator = User.objects.create_superuser("stateful", password="x")
    _, management = apikey_create(
        actor=SYSTEM, name="stateful-management", scope="management", user=operator
    )
    _, server = apikey_create(
        actor=SYSTEM, name="stateful-server", scope="server", environment=production
    )
    yield {"management": management, "server": server}
    store().clear()
    key_cache.clear()


def _run(schema: Any, key: str, failures: list[str]) -> int:
    calls = 0

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"headers": {"Authorization": f"Bearer {key}"}, "timeout": 10}

        def validate_response(
            self, response: Any, case: Any, additional_checks: Any = None, **kw: Any
        ) -> None:
            nonlocal calls
            calls += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.operation.label}: {response.status_code} for "
                    f"{case.as_curl_command()}"
                )

    Workflow.run(
        settings=settings(
            max_examples=SCENARIOS,
            stateful_step_count=STEPS,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            print_blob=False,
        )
    )
    return calls


def test_api__stateful_links_both_key_kinds__never_5xx(keys, live_server):
    # Given
    schema = schemathesis.openapi.from_url(
        f"{live_server.url}/api/schema/?format=json"
    ).exclude(path_regex="^/api/v1/rollback-runs")
    serving = schema.include(path_regex=SERVER_KEY_PATHS)
    management = schema.exclude(path_regex=SERVER_KEY_PATHS)
    failures: list[str] = []
    # When
    calls = {
        "management": _run(management, keys["management"], failures),
        "server": _run(serving, keys["server"], failures),
    }
    # Then
    assert failures == []
    assert calls["management"] >= SCENARIOS and calls["server"] >= SCENARIOS
