"""Create, update and archive flags; create environments."""

from __future__ import annotations

from typing import Any

from controlplane.audit.services import (
    GLOBAL_CHAIN,
    audited_transaction,
    record_audit_event,
)
from controlplane.exceptions import Conflict, InvalidInput
from flags import engine, validation
from flags.models import Environment, Flag, FlagState, MerchantOverride, ValueType
from flags.services._common import (
    bump_rulesets,
    full_clean,
    invalid_from,
    state_snapshot,
)

BOOL_VARIATIONS = [{"key": "on", "value": True}, {"key": "off", "value": False}]


def _flag_snapshot(flag: Flag) -> dict[str, Any]:
    return {
        "key": flag.key,
        "name": flag.name,
        "description": flag.description,
        "value_type": flag.value_type,
        "variations": flag.variations,
        "owner": flag.owner,
        "tags": flag.tags,
        "archived": flag.archived,
    }


def _default_state(
    flag: Flag, environment: Environment, off_variation: str
) -> FlagState:
    return FlagState(
        flag=flag,
        environment=environment,
        enabled=False,
        off_variation=off_variation,
        rules=[],
        fallthrough={"variation": off_variation},
    )


def environment_create(
    *, actor: Any, key: str, name: str = "", sort_order: int = 0
) -> Environment:
    """Create an environment and an (off) state in it for every flag."""
    with audited_transaction():
        environment = Environment(key=key, name=name or key, sort_order=sort_order)
        full_clean(environment)
        environment.save()
        states = [
            _default_state(flag, environment, _default_off(flag))
            for flag in Flag.objects.all()
        ]
        FlagState.objects.bulk_create(states)
        record_audit_event(
            actor=actor,
            action="environment.created",
            target=environment,
            environment=environment.key,
            chain=GLOBAL_CHAIN,  # a registry change, before the new chain exists
            after={
                "key": environment.key,
                "name": environment.name,
                "flag_states": len(states),
            },
        )
    return environment


def _default_off(flag: Flag) -> str:
    keys = flag.variation_keys
    return "off" if "off" in keys else keys[-1]


def _clean_tags(tags: Any) -> list[str]:
    if tags is None:
        return []
    if not isinstance(tags, (list, tuple)) or not all(isinstance(t, str) for t in tags):
        raise InvalidInput("tags: must be a list of strings", field="tags")
    return sorted({tag.strip() for tag in tags if tag.strip()})


def flag_create(
    *,
    actor: Any,
    key: str,
    name: str = "",
    value_type: str = ValueType.BOOL,
    variations: list[dict] | None = None,
    off_variation: str | None = None,
    description: str = "",
    owner: str = "",
    tags: list[str] | None = None,
) -> Flag:
    """Create a flag and its state in every environment (disabled).

    A bool flag gets ``on``/``off`` variations when none are given. The off
    variation defaults to ``off`` (or the last variation).
    """
    if value_type not in ValueType.values:
        raise InvalidInput(
            f"value_type: must be one of {', '.join(ValueType.values)}",
            field="value_type",
        )
    if variations is None:
        if value_type != ValueType.BOOL:
            raise InvalidInput(
                f"variations: a {value_type} flag needs variations", field="variations"
            )
        variations = BOOL_VARIATIONS
    try:
        variations = validation.validate_variations(value_type, variations)
    except engine.RulesetError as exc:
        raise invalid_from(exc) from None
    with audited_transaction():
        flag = Flag(
            key=key,
            name=name or key,
            value_type=value_type,
            variations=variations,
            description=description,
            owner=owner,
            tags=_clean_tags(tags),
        )
        full_clean(flag)
        off = off_variation or _default_off(flag)
        if off not in flag.variation_keys:
            raise InvalidInput(
                f"off_variation: unknown variation {off!r}", field="off_variation"
            )
        flag.save()
        environments = list(Environment.objects.all())
        FlagState.objects.bulk_create(
            [_default_state(flag, env, off) for env in environments]
        )
        record_audit_event(
            actor=actor,
            action="flag.created",
            target=flag,
            after=_flag_snapshot(flag) | {"off_variation": off},
        )
        bump_rulesets((env.pk for env in environments), flag_ids=[flag.pk])
    return flag


def flag_update(
    *,
    actor: Any,
    flag: Flag,
    name: str | None = None,
    description: str | None = None,
    owner: str | None = None,
    tags: list[str] | None = None,
    variations: list[dict] | None = None,
) -> Flag:
    """Update a flag's descriptive fields and/or its variations.

    The key and value type never change. Variations may change values or be
    added; a variation still used by a state, rule or override cannot go.
    """
    with audited_transaction():
        flag = Flag.objects.select_for_update().get(pk=flag.pk)
        before = _flag_snapshot(flag)
        if name is not None:
            flag.name = name
        if description is not None:
            flag.description = description
        if owner is not None:
            flag.owner = owner
        if tags is not None:
            flag.tags = _clean_tags(tags)
        affects_evaluation = False
        if variations is not None:
            try:
                variations = validation.validate_variations(flag.value_type, variations)
            except engine.RulesetError as exc:
                raise invalid_from(exc) from None
            new_keys = {v["key"] for v in variations}
            used = _variations_in_use(flag)
            missing = sorted(used - new_keys)
            if missing:
                raise Conflict(
                    f"variations: {', '.join(missing)} still in use by a flag state or override",
                    field="variations",
                )
            affects_evaluation = variations != flag.variations
            flag.variations = variations
        full_clean(flag)
        after = _flag_snapshot(flag)
        if after == before:
            return flag
        flag.save()
        record_audit_event(
            actor=actor, action="flag.updated", target=flag, before=before, after=after
        )
        if affects_evaluation:
            bump_rulesets(
                flag.states.values_list("environment_id", flat=True),
                flag_ids=[flag.pk],
            )
    return flag


def _variations_in_use(flag: Flag) -> set[str]:
    used: set[str] = set(
        MerchantOverride.objects.filter(flag=flag).values_list("variation", flat=True)
    )
    for state in flag.states.all():
        used.add(state.off_variation)
        serves = [state.fallthrough] + [rule["serve"] for rule in state.rules]
        for serve in serves:
            if "variation" in serve:
                used.add(serve["variation"])
            else:
                used.update(
                    arm["variation"] for arm in serve["split"] if arm["weight"] > 0
                )
    return used


def flag_archive(*, actor: Any, flag: Flag, archived: bool = True) -> Flag:
    """Archive a flag (evaluations then answer FLAG_NOT_FOUND) or unarchive it."""
    with audited_transaction():
        flag = Flag.objects.select_for_update().get(pk=flag.pk)
        if flag.archived == archived:
            return flag
        flag.archived = archived
        flag.save(update_fields=["archived", "updated_at"])
        record_audit_event(
            actor=actor,
            action="flag.archived" if archived else "flag.unarchived",
            target=flag,
            before={"archived": not archived},
            after={"archived": archived},
        )
        bump_rulesets(
            flag.states.values_list("environment_id", flat=True), flag_ids=[flag.pk]
        )
    return flag


__all__ = [
    "environment_create",
    "flag_archive",
    "flag_create",
    "flag_update",
    "state_snapshot",
]
