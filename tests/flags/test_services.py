"""Every flag service: one audit event per change, none for a no-op.

Real database; rows are built through the services themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone

from controlplane.audit.actors import Actor
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import Conflict, InvalidInput, NotFound, VersionConflict
from flags import engine, mappers, services
from flags.models import (
    Environment,
    Flag,
    FlagState,
    Merchant,
    MerchantOverride,
    Segment,
)

GOLD_CLAUSE = {"attribute": "tier", "op": "in", "values": ["gold"], "negate": False}
THEMES = [{"key": "light", "value": "light"}, {"key": "dark", "value": "dark"}]


@dataclass
class World:
    actor: Actor
    production: Environment
    staging: Environment
    flag: Flag
    merchant: Merchant
    segment: Segment

    def state(self, environment: Environment | None = None) -> FlagState:
        return FlagState.objects.get(
            flag=self.flag, environment=environment or self.production
        )


@pytest.fixture
def world(environments, flag_factory, merchant_factory, actor, system_actor) -> World:
    flag = flag_factory("sequential_workflow")
    merchant = merchant_factory("m-pilot", attributes={"tier": "gold"})
    segment = services.segment_create(
        actor=system_actor, key="gold", clauses=[GOLD_CLAUSE]
    )
    return World(
        actor,
        environments["production"],
        environments["staging"],
        flag,
        merchant,
        segment,
    )


def last_event_id() -> int:
    return AuditEvent.objects.order_by("-id").values_list("id", flat=True).first() or 0


def ruleset_versions() -> dict[str, int]:
    return dict(Environment.objects.values_list("key", "ruleset_version"))


def contains(expected: dict | None, actual: dict | None) -> bool:
    """Return whether every key of ``expected`` has that value in ``actual``."""
    if expected is None:
        return actual is None
    return actual is not None and all(actual.get(k) == v for k, v in expected.items())


def _kill(w: World) -> None:
    services.flag_state_kill(
        actor=w.actor, flag=w.flag, environment=w.production, reason="x"
    )


def _override(w: World, **kwargs: Any) -> MerchantOverride:
    return services.override_set(
        actor=w.actor,
        flag=w.flag,
        environment=w.production,
        merchant=w.merchant,
        variation="on",
        **kwargs,
    )


@dataclass
class Case:
    run: Callable[[World], Any]
    action: str
    target_type: str
    before: dict | None
    after: dict | None
    bumps: frozenset[str]  # environments whose ruleset version moves
    prepare: Callable[[World], Any] = lambda w: None
    environment: str = ""


BOTH = frozenset({"production", "staging"})
PROD = frozenset({"production"})
NONE = frozenset()

CASES: dict[str, Case] = {
    "environment_create": Case(
        lambda w: services.environment_create(actor=w.actor, key="qa", name="QA"),
        "environment.created",
        "flags.environment",
        None,
        {"key": "qa", "name": "QA", "flag_states": 1},
        NONE,
        environment="qa",
    ),
    "flag_create": Case(
        lambda w: services.flag_create(
            actor=w.actor,
            key="checkout_theme",
            value_type="string",
            variations=THEMES,
            off_variation="light",
        ),
        "flag.created",
        "flags.flag",
        None,
        {
            "key": "checkout_theme",
            "value_type": "string",
            "variations": THEMES,
            "off_variation": "light",
            "archived": False,
        },
        BOTH,
    ),
    "flag_update name": Case(
        lambda w: services.flag_update(actor=w.actor, flag=w.flag, name="Sequential"),
        "flag.updated",
        "flags.flag",
        {"name": "sequential_workflow"},
        {"name": "Sequential"},
        NONE,
    ),
    "flag_update variations": Case(
        lambda w: services.flag_update(
            actor=w.actor,
            flag=w.flag,
            variations=[
                {"key": "on", "value": True, "name": "On"},
                {"key": "off", "value": False},
            ],
        ),
        "flag.updated",
        "flags.flag",
        {"variations": [{"key": "on", "value": True}, {"key": "off", "value": False}]},
        {
            "variations": [
                {"key": "on", "value": True, "name": "On"},
                {"key": "off", "value": False},
            ]
        },
        BOTH,
    ),
    "flag_archive": Case(
        lambda w: services.flag_archive(actor=w.actor, flag=w.flag),
        "flag.archived",
        "flags.flag",
        {"archived": False},
        {"archived": True},
        BOTH,
    ),
    "flag_archive unarchive": Case(
        lambda w: services.flag_archive(actor=w.actor, flag=w.flag, archived=False),
        "flag.unarchived",
        "flags.flag",
        {"archived": True},
        {"archived": False},
        BOTH,
        prepare=lambda w: services.flag_archive(actor=w.actor, flag=w.flag),
    ),
    "flag_state_update": Case(
        lambda w: services.flag_state_update(
            actor=w.actor,
            flag=w.flag,
            environment=w.production,
            expected_version=1,
            enabled=True,
            rules=[
                {
                    "clauses": [{"op": "segment", "values": ["gold"]}],
                    "serve": {"variation": "on"},
                }
            ],
        ),
        "flag_state.updated",
        "flags.flagstate",
        {"enabled": False, "rules": [], "version": 1},
        {"enabled": True, "version": 2},
        PROD,
        environment="production",
    ),
    "flag_state_set_percentage": Case(
        lambda w: services.flag_state_set_percentage(
            actor=w.actor, flag=w.flag, environment=w.production, percentage=10
        ),
        "flag_state.percentage_set",
        "flags.flagstate",
        {"fallthrough": {"variation": "off"}},
        {
            "fallthrough": {
                "split": [
                    {"variation": "on", "weight": 10_000},
                    {"variation": "off", "weight": 90_000},
                ]
            },
            "version": 2,
        },
        PROD,
        environment="production",
    ),
    "flag_state_serve": Case(
        lambda w: services.flag_state_serve(
            actor=w.actor, flag=w.flag, environment=w.production, variation="on"
        ),
        "flag_state.fallthrough_set",
        "flags.flagstate",
        {"fallthrough": {"variation": "off"}},
        {"fallthrough": {"variation": "on"}},
        PROD,
        environment="production",
    ),
    "flag_state_set_enabled": Case(
        lambda w: services.flag_state_set_enabled(
            actor=w.actor, flag=w.flag, environment=w.production, enabled=True
        ),
        "flag_state.enabled",
        "flags.flagstate",
        {"enabled": False},
        {"enabled": True},
        PROD,
        environment="production",
    ),
    "flag_state_set_enabled off": Case(
        lambda w: services.flag_state_set_enabled(
            actor=w.actor, flag=w.flag, environment=w.production, enabled=False
        ),
        "flag_state.disabled",
        "flags.flagstate",
        {"enabled": True},
        {"enabled": False},
        PROD,
        prepare=lambda w: services.flag_state_set_enabled(
            actor=w.actor, flag=w.flag, environment=w.production, enabled=True
        ),
        environment="production",
    ),
    "flag_state_kill": Case(
        lambda w: _kill(w),
        "flag_state.killed",
        "flags.flagstate",
        {"enabled": True, "killed": False},
        {"enabled": False, "killed": True},
        PROD,
        prepare=lambda w: services.flag_state_set_enabled(
            actor=w.actor, flag=w.flag, environment=w.production, enabled=True
        ),
        environment="production",
    ),
    "flag_state_restore": Case(
        lambda w: services.flag_state_restore(
            actor=w.actor, flag=w.flag, environment=w.production
        ),
        "flag_state.restored",
        "flags.flagstate",
        {"enabled": False, "killed": True},
        {"enabled": True, "killed": False},
        PROD,
        prepare=_kill,
        environment="production",
    ),
    "flag_state_restore_snapshot": Case(
        lambda w: services.flag_state_restore_snapshot(
            actor=w.actor,
            flag=w.flag,
            environment=w.production,
            snapshot={
                "enabled": False,
                "off_variation": "off",
                "rules": [],
                "fallthrough": {"variation": "off"},
                "bucket_by": "merchant",
                "killed": False,
            },
        ),
        "flag_state.restored_snapshot",
        "flags.flagstate",
        {"fallthrough": {"variation": "on"}},
        {"fallthrough": {"variation": "off"}},
        PROD,
        prepare=lambda w: services.flag_state_serve(
            actor=w.actor, flag=w.flag, environment=w.production, variation="on"
        ),
        environment="production",
    ),
    "override_set create": Case(
        lambda w: _override(w, note="pilot"),
        "override.created",
        "flags.merchantoverride",
        None,
        {
            "flag": "sequential_workflow",
            "merchant": "m-pilot",
            "variation": "on",
            "note": "pilot",
            "expires_at": None,
        },
        PROD,
        environment="production",
    ),
    "override_set update": Case(
        lambda w: services.override_set(
            actor=w.actor,
            flag=w.flag,
            environment=w.production,
            merchant=w.merchant,
            variation="off",
        ),
        "override.updated",
        "flags.merchantoverride",
        {"variation": "on"},
        {"variation": "off"},
        PROD,
        prepare=_override,
        environment="production",
    ),
    "override_remove": Case(
        lambda w: services.override_remove(
            actor=w.actor, flag=w.flag, environment=w.production, merchant=w.merchant
        ),
        "override.removed",
        "flags.merchantoverride",
        {"merchant": "m-pilot", "variation": "on"},
        None,
        PROD,
        prepare=_override,
        environment="production",
    ),
    "overrides_purge_expired": Case(
        lambda w: services.overrides_purge_expired(
            actor=w.actor, now=timezone.now() + dt.timedelta(hours=2)
        ),
        "override.expired",
        "flags.merchantoverride",
        {"merchant": "m-pilot"},
        None,
        PROD,
        prepare=lambda w: _override(
            w, expires_at=timezone.now() + dt.timedelta(hours=1)
        ),
        environment="production",
    ),
    "merchant_create": Case(
        lambda w: services.merchant_create(
            actor=w.actor, key="m-new", name="New", attributes={"tier": "silver"}
        ),
        "merchant.created",
        "flags.merchant",
        None,
        {
            "key": "m-new",
            "name": "New",
            "is_active": True,
            "attributes": {"tier": "silver"},
        },
        BOTH,
    ),
    "merchant_update": Case(
        lambda w: services.merchant_update(
            actor=w.actor, merchant=w.merchant, is_active=False
        ),
        "merchant.updated",
        "flags.merchant",
        {"is_active": True},
        {"is_active": False},
        BOTH,
    ),
    "segment_create": Case(
        lambda w: services.segment_create(
            actor=w.actor,
            key="kr",
            clauses=[{"attribute": "country", "op": "in", "values": ["KR"]}],
        ),
        "segment.created",
        "flags.segment",
        None,
        {"key": "kr"},
        NONE,
    ),
    "segment_update": Case(
        lambda w: services.segment_update(
            actor=w.actor,
            segment=w.segment,
            clauses=[{"attribute": "tier", "op": "in", "values": ["gold", "platinum"]}],
        ),
        "segment.updated",
        "flags.segment",
        {"clauses": [GOLD_CLAUSE]},
        {
            "clauses": [
                {
                    "attribute": "tier",
                    "op": "in",
                    "values": ["gold", "platinum"],
                    "negate": False,
                }
            ]
        },
        BOTH,
    ),
    "segment_delete": Case(
        lambda w: services.segment_delete(actor=w.actor, segment=w.segment),
        "segment.deleted",
        "flags.segment",
        {"key": "gold", "clauses": [GOLD_CLAUSE]},
        None,
        NONE,
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_service__change__exactly_one_audit_event_with_before_after(world, name):
    # Given
    case = CASES[name]
    case.prepare(world)
    mark, versions = last_event_id(), ruleset_versions()
    # When
    case.run(world)
    # Then
    events = list(AuditEvent.objects.filter(pk__gt=mark).order_by("id"))
    assert len(events) == 1, [e.action for e in events]
    event = events[0]
    assert event.action == case.action
    assert (event.actor_type, event.actor_id, event.actor_name) == (
        "user",
        "test:alice",
        "alice",
    )
    assert event.target_type == case.target_type
    assert event.environment == case.environment
    assert contains(case.before, event.before), event.before
    assert contains(case.after, event.after), event.after
    moved = {
        key
        for key, version in ruleset_versions().items()
        if version != versions.get(key, version)
    }
    assert moved == case.bumps


NOOPS: dict[str, tuple[Callable[[World], Any], Callable[[World], Any]]] = {
    "flag_update same name": (
        lambda w: None,
        lambda w: services.flag_update(
            actor=w.actor, flag=w.flag, name="sequential_workflow"
        ),
    ),
    "flag_archive not archived": (
        lambda w: None,
        lambda w: services.flag_archive(actor=w.actor, flag=w.flag, archived=False),
    ),
    "flag_state_update same": (
        lambda w: None,
        lambda w: services.flag_state_update(
            actor=w.actor,
            flag=w.flag,
            environment=w.production,
            expected_version=1,
            enabled=False,
        ),
    ),
    "flag_state_set_percentage same": (
        lambda w: services.flag_state_set_percentage(
            actor=w.actor, flag=w.flag, environment=w.production, percentage=10
        ),
        lambda w: services.flag_state_set_percentage(
            actor=w.actor, flag=w.flag, environment=w.production, percentage=10
        ),
    ),
    "flag_state_serve same": (
        lambda w: None,
        lambda w: services.flag_state_serve(
            actor=w.actor, flag=w.flag, environment=w.production, variation="off"
        ),
    ),
    "flag_state_set_enabled same": (
        lambda w: None,
        lambda w: services.flag_state_set_enabled(
            actor=w.actor, flag=w.flag, environment=w.production, enabled=False
        ),
    ),
    "flag_state_kill twice": (_kill, _kill),
    "override_set same": (_override, _override),
    "overrides_purge_expired nothing": (
        _override,
        lambda w: services.overrides_purge_expired(actor=w.actor),
    ),
    "merchant_update same": (
        lambda w: None,
        lambda w: services.merchant_update(
            actor=w.actor, merchant=w.merchant, attributes={"tier": "gold"}
        ),
    ),
    "segment_update same": (
        lambda w: None,
        lambda w: services.segment_update(
            actor=w.actor, segment=w.segment, clauses=[GOLD_CLAUSE]
        ),
    ),
}


@pytest.mark.parametrize("name", list(NOOPS))
def test_service__no_op__no_audit_event_and_no_version_bump(world, name):
    # Given
    prepare, run = NOOPS[name]
    prepare(world)
    mark, versions = last_event_id(), ruleset_versions()
    state_version = world.state().version
    # When
    run(world)
    # Then
    assert last_event_id() == mark
    assert ruleset_versions() == versions
    assert world.state().version == state_version


def test_flag_create__environments_exist__disabled_state_in_each(world):
    # Given / When
    flag = services.flag_create(actor=world.actor, key="enable_supplier_policy")
    # Then
    states = FlagState.objects.filter(flag=flag).select_related("environment")
    assert {s.environment.key for s in states} == {"production", "staging"}
    assert all(
        (s.enabled, s.off_variation, s.fallthrough, s.version)
        == (False, "off", {"variation": "off"}, 1)
        for s in states
    )


def test_environment_create__flags_exist__state_for_every_flag(world, flag_factory):
    # Given
    other = flag_factory("enable_supplier_policy")
    # When
    qa = services.environment_create(actor=world.actor, key="qa")
    # Then
    states = FlagState.objects.filter(environment=qa)
    assert {s.flag_id for s in states} == {world.flag.pk, other.pk}
    assert not any(s.enabled for s in states)


def test_flag_create__bad_input__refused_and_nothing_written(world):
    # Given
    mark = last_event_id()
    # When / Then
    with pytest.raises(InvalidInput) as error:
        services.flag_create(
            actor=world.actor,
            key="bad",
            value_type="bool",
            variations=[{"key": "on", "value": 1}, {"key": "off", "value": 0}],
        )
    assert error.value.field == "variations[0].value"
    with pytest.raises(InvalidInput):
        services.flag_create(actor=world.actor, key="Bad Key")
    assert not Flag.objects.filter(key__in=["bad", "Bad Key"]).exists()
    assert last_event_id() == mark


def test_flag_state_update__stale_version__conflict_and_nothing_changes(world):
    # Given someone else moved the state to version 2
    services.flag_state_set_percentage(
        actor=world.actor, flag=world.flag, environment=world.production, percentage=10
    )
    before = world.state()
    mark, versions = last_event_id(), ruleset_versions()
    # When
    with pytest.raises(VersionConflict) as error:
        services.flag_state_update(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            expected_version=1,
            fallthrough={"variation": "on"},
        )
    # Then
    assert (error.value.current, error.value.expected) == (2, 1)
    assert error.value.http_status == 409
    assert error.value.as_dict()["current_version"] == 2
    after = world.state()
    assert (after.version, after.fallthrough, after.enabled) == (
        before.version,
        before.fallthrough,
        before.enabled,
    )
    assert last_event_id() == mark
    assert ruleset_versions() == versions


def test_flag_state_update__current_version__applied_and_version_moves(world):
    # Given
    version = world.state().version
    # When
    state = services.flag_state_update(
        actor=world.actor,
        flag=world.flag,
        environment=world.production,
        expected_version=version,
        enabled=True,
    )
    # Then
    assert state.version == world.state().version == version + 1


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (
            {"fallthrough": {"split": [{"variation": "on", "weight": 1}]}},
            "fallthrough.split",
        ),
        ({"off_variation": "maybe"}, "off_variation"),
        (
            {
                "rules": [
                    {
                        "clauses": [{"op": "segment", "values": ["nope"]}],
                        "serve": {"variation": "on"},
                    }
                ]
            },
            "rules[0].clauses[0].values",
        ),
        ({"enabled": "yes"}, "enabled"),
    ],
)
def test_flag_state_update__invalid__refused_with_field(world, kwargs, field):
    # Given
    mark = last_event_id()
    # When
    with pytest.raises(InvalidInput) as error:
        services.flag_state_update(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            expected_version=None,
            **kwargs,
        )
    # Then
    assert error.value.field == field
    assert world.state().version == 1
    assert last_event_id() == mark


@pytest.mark.parametrize("percentage", [-1, 100.5, 12.3456, "ten"])
def test_flag_state_set_percentage__bad_percentage__refused(world, percentage):
    # Given / When / Then
    with pytest.raises(InvalidInput) as error:
        services.flag_state_set_percentage(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            percentage=percentage,
        )
    assert error.value.field == "percentage"


def test_flag_state_restore__not_killed__conflict(world):
    # Given / When / Then
    with pytest.raises(Conflict):
        services.flag_state_restore(
            actor=world.actor, flag=world.flag, environment=world.production
        )


def test_flag_state_kill__archived_flag__still_allowed(world):
    # Given
    services.flag_archive(actor=world.actor, flag=world.flag)
    # When
    state = services.flag_state_kill(
        actor=world.actor, flag=world.flag, environment=world.production
    )
    # Then
    assert state.killed_at is not None
    with pytest.raises(Conflict):
        services.flag_state_serve(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            variation="on",
        )


def _setup_inactive(w: World) -> dict:
    services.merchant_update(actor=w.actor, merchant=w.merchant, is_active=False)
    return {}


def _setup_archived(w: World) -> dict:
    services.flag_archive(actor=w.actor, flag=w.flag)
    return {}


@pytest.mark.parametrize(
    "setup, kwargs, error_type, field",
    [
        (_setup_inactive, {}, Conflict, "merchant"),
        (_setup_archived, {}, Conflict, "flag"),
        (lambda w: {}, {"variation": "maybe"}, InvalidInput, "variation"),
        (lambda w: {}, {"expires_at": "past"}, InvalidInput, "expires_at"),
        (lambda w: {}, {"expires_at": "naive"}, InvalidInput, "expires_at"),
    ],
    ids=[
        "inactive merchant",
        "archived flag",
        "unknown variation",
        "past expiry",
        "naive expiry",
    ],
)
def test_override_set__refused__no_override_no_event(
    world, setup, kwargs, error_type, field
):
    # Given
    setup(world)
    world.flag.refresh_from_db()
    world.merchant.refresh_from_db()
    if kwargs.get("expires_at") == "past":
        kwargs["expires_at"] = timezone.now() - dt.timedelta(minutes=1)
    elif kwargs.get("expires_at") == "naive":
        kwargs["expires_at"] = dt.datetime(2999, 1, 1)
    arguments = {"variation": "on"} | kwargs
    mark = last_event_id()
    # When
    with pytest.raises(error_type) as error:
        services.override_set(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            merchant=world.merchant,
            **arguments,
        )
    # Then
    assert error.value.field == field
    assert not MerchantOverride.objects.exists()
    assert last_event_id() == mark


def test_override_remove__none__not_found(world):
    # Given / When / Then
    with pytest.raises(NotFound):
        services.override_remove(
            actor=world.actor,
            flag=world.flag,
            environment=world.production,
            merchant=world.merchant,
        )


def test_overrides_purge_expired__mixed__removes_and_audits_expired_only(
    world, merchant_factory
):
    # Given one override that expires in an hour and one that never does
    other = merchant_factory("m-other")
    _override(world, expires_at=timezone.now() + dt.timedelta(hours=1))
    services.override_set(
        actor=world.actor,
        flag=world.flag,
        environment=world.production,
        merchant=other,
        variation="on",
    )
    mark = last_event_id()
    # When two hours have passed
    removed = services.overrides_purge_expired(
        actor=world.actor, now=timezone.now() + dt.timedelta(hours=2)
    )
    # Then
    assert removed == 1
    assert list(MerchantOverride.objects.values_list("merchant__key", flat=True)) == [
        "m-other"
    ]
    events = list(AuditEvent.objects.filter(pk__gt=mark))
    assert [(e.action, e.details["merchant"]) for e in events] == [
        ("override.expired", "m-pilot")
    ]


def test_override_set__then_evaluate__only_that_merchant_is_on(world, merchant_factory):
    # Given
    merchant_factory("m-other")
    services.flag_state_set_enabled(
        actor=world.actor, flag=world.flag, environment=world.production, enabled=True
    )
    # When
    _override(world)
    # Then
    ruleset = mappers.ruleset_compile(world.production)
    pilot = engine.evaluate(ruleset, world.flag.key, {"merchant": "m-pilot"})
    other = engine.evaluate(ruleset, world.flag.key, {"merchant": "m-other"})
    assert (pilot.value, pilot.reason, pilot.level) == (
        True,
        "TARGETING_MATCH",
        "override",
    )
    assert (other.value, other.reason, other.level) == (False, "STATIC", "default")
    assert pilot.version == Environment.objects.get(key="production").ruleset_version


def test_segment_delete__used_by_a_rule__conflict(world):
    # Given
    services.flag_state_update(
        actor=world.actor,
        flag=world.flag,
        environment=world.production,
        expected_version=None,
        rules=[
            {
                "clauses": [{"op": "segment", "values": ["gold"]}],
                "serve": {"variation": "on"},
            }
        ],
    )
    # When / Then
    with pytest.raises(Conflict):
        services.segment_delete(actor=world.actor, segment=world.segment)
    assert Segment.objects.filter(key="gold").exists()


def test_merchant_create__merchant_attribute_name__refused(world):
    # Given / When / Then
    with pytest.raises(InvalidInput) as error:
        services.merchant_create(
            actor=world.actor, key="m-x", attributes={"merchant": "y"}
        )
    assert error.value.field == "attributes"
