"""A change confined to one flag recompiles only that flag, everywhere.

The store applies it without reloading the environment (``store.applied``
moves, ``store.reloads`` does not), the answers are those of a full reload
at the same version, and the serialised ruleset is byte for byte the JSON of
its data.
"""

from __future__ import annotations

import json

import pytest

from controlplane.audit.actors import SYSTEM
from flags import engine, mappers, ruleset_json, services
from flags.engine_delta import update_ruleset
from flags.snapshot import RulesetStore, serialized

CONTEXTS = [
    {"merchant": "m-pilot"},
    {"merchant": "m-gold"},
    {"merchant": "m-other", "tier": "gold"},
    {"merchant": "m-3"},
    {"merchant": "m-17"},
    {},
]


def _answers(ruleset: engine.Ruleset) -> list[tuple]:
    return [
        (
            answer.flag_key,
            answer.value,
            answer.variation,
            answer.reason,
            answer.level,
            answer.error_code,
        )
        for context in CONTEXTS
        for answer in engine.evaluate_all(ruleset, context)
    ]


@pytest.fixture
def scene(production, flag_factory, merchant_factory):
    merchant_factory("m-pilot", attributes={"tier": "silver"})
    merchant_factory("m-gold", attributes={"tier": "gold"})
    flags = {key: flag_factory(key) for key in ("alpha", "beta", "gamma")}
    for flag in flags.values():
        services.flag_state_set_enabled(
            actor=SYSTEM, flag=flag, environment=production, enabled=True
        )
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=flags["beta"], environment=production, percentage=40
    )
    return flags


def _pilot(production):
    from flags.models import Merchant

    return Merchant.objects.get(key="m-pilot")


CHANGES = {
    "percentage": lambda flags, env: services.flag_state_set_percentage(
        actor=SYSTEM, flag=flags["alpha"], environment=env, percentage=60
    ),
    "override_add": lambda flags, env: services.override_set(
        actor=SYSTEM,
        flag=flags["alpha"],
        environment=env,
        merchant=_pilot(env),
        variation="on",
    ),
    "kill": lambda flags, env: services.flag_state_kill(
        actor=SYSTEM, flag=flags["beta"], environment=env, reason="test"
    ),
    "archive": lambda flags, env: services.flag_archive(
        actor=SYSTEM, flag=flags["gamma"]
    ),
    "create": lambda flags, env: services.flag_create(
        actor=SYSTEM, key="delta", name="delta"
    ),
    "unarchive": lambda flags, env: services.flag_archive(
        actor=SYSTEM,
        flag=services.flag_archive(actor=SYSTEM, flag=flags["gamma"]),
        archived=False,
    ),
    "rule": lambda flags, env: services.flag_state_update(
        actor=SYSTEM,
        flag=flags["gamma"],
        environment=env,
        expected_version=None,
        rules=[
            {
                "clauses": [{"attribute": "tier", "op": "in", "values": ["gold"]}],
                "serve": {"variation": "off"},
            }
        ],
    ),
}


@pytest.mark.parametrize("kind", sorted(CHANGES))
def test_store__one_flag_changed__applied_without_reload_same_answers(
    scene, production, kind
):
    # Given
    store = RulesetStore()
    before, _ = store.get_ruleset("production")
    reloads = store.reloads
    # When
    CHANGES[kind](scene, production)
    store.check_versions()
    # Then
    after, _ = store.get_ruleset("production")
    assert store.reloads == reloads
    assert store.applied == 1
    assert after.version > before.version
    full = mappers.ruleset_compile(production)
    assert full.version == after.version
    assert _answers(after) == _answers(full)
    assert after.data["flags"] == full.data["flags"]


def test_store__override_removed__applied_without_reload(scene, production):
    # Given
    services.override_set(
        actor=SYSTEM,
        flag=scene["alpha"],
        environment=production,
        merchant=_pilot(production),
        variation="off",
    )
    store = RulesetStore()
    store.get_ruleset("production")
    reloads = store.reloads
    # When
    services.override_remove(
        actor=SYSTEM,
        flag=scene["alpha"],
        environment=production,
        merchant=_pilot(production),
    )
    store.check_versions()
    # Then
    after, _ = store.get_ruleset("production")
    assert store.reloads == reloads
    assert after.flags["alpha"].overrides == {}
    assert _answers(after) == _answers(mappers.ruleset_compile(production))


def test_store__merchant_changed__whole_environment_reloaded(
    scene, production, merchant_factory
):
    # Given
    store = RulesetStore()
    store.get_ruleset("production")
    reloads = store.reloads
    # When: registry attributes feed every rule
    merchant_factory("m-new", attributes={"tier": "gold"})
    store.check_versions()
    # Then
    after, _ = store.get_ruleset("production")
    assert store.reloads == reloads + 1
    assert store.applied == 0
    assert after.merchants["m-new"] == {"tier": "gold"}


def test_store__several_flag_changes__applied_in_one_step(scene, production):
    # Given
    store = RulesetStore()
    store.get_ruleset("production")
    # When
    for kind in ("percentage", "kill", "override_add"):
        CHANGES[kind](scene, production)
    store.check_versions()
    # Then
    after, _ = store.get_ruleset("production")
    assert store.applied == 1
    assert _answers(after) == _answers(mappers.ruleset_compile(production))


def test_update_ruleset__unchanged_flags__shared_as_they_are():
    # Given
    data = {
        "environment": "e",
        "version": 3,
        "flags": [
            {
                "key": key,
                "value_type": "bool",
                "variations": [
                    {"key": "on", "value": True},
                    {"key": "off", "value": False},
                ],
                "enabled": True,
                "off_variation": "off",
                "rules": [],
                "fallthrough": {"variation": "on"},
                "overrides": [{"merchant": "m-1", "variation": "off"}],
            }
            for key in ("a", "b")
        ],
        "merchants": {"m-1": {"tier": "gold"}},
    }
    ruleset = engine.compile_ruleset(data)
    changed = dict(data["flags"][1], enabled=False)
    # When
    updated = update_ruleset(ruleset, version=4, changed={"b": changed})
    # Then
    assert updated.flags["a"] is ruleset.flags["a"]  # compiled at version 3
    assert engine.evaluate(updated, "b", {"merchant": "m-1"}).version == 4
    assert engine.evaluate(updated, "a", {"merchant": "m-1"}).variation == "off"
    assert engine.evaluate(updated, "b", {"merchant": "m-2"}).reason == "DISABLED"
    assert updated.flags["a"].overrides is ruleset.flags["a"].overrides
    assert updated.merchants is ruleset.merchants
    assert updated.data["flags"][0] is data["flags"][0]
    assert updated.data["version"] == 4


def test_serialized__after_changes__same_bytes_as_json_dumps(scene, production):
    # Given
    ruleset_json.clear()
    store = RulesetStore()
    first, _ = store.get_ruleset("production")
    first_bytes = serialized(first)
    CHANGES["percentage"](scene, production)
    store.check_versions()
    # When
    second, _ = store.get_ruleset("production")
    second_bytes = serialized(second)
    # Then
    for ruleset, payload in ((first, first_bytes), (second, second_bytes)):
        assert payload == json.dumps(
            ruleset.data, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    assert serialized(second) is second_bytes  # cached per version
    assert json.loads(second_bytes)["version"] == second.version
