"""Change how a flag is served in one environment.

Every change locks the state row, checks the expected version when one is
given (optimistic locking: a stale edit is refused, never merged), validates
the result with the engine's rules, bumps the state's version and the
environment's ruleset version, and writes one audit event.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db import connection
from django.utils import timezone

from controlplane.audit.services import (
    audited_transaction,
    environment_chain,
    record_audit_event,
)
from controlplane.exceptions import Conflict, InvalidInput, VersionConflict
from flags import engine, validation
from flags.models import Environment, Flag, FlagState, Segment
from flags.services._common import invalid_from, state_snapshot

_UNSET: Any = object()


def _segment_keys(rules: Any) -> list[str]:
    """Return the existing segments among those ``rules`` refer to.

    Only referenced segments matter to the validation, and most states refer
    to none: then no query runs. Malformed rules are left to the validation.
    """
    wanted: set[str] = set()
    for rule in rules if isinstance(rules, list) else ():
        clauses = rule.get("clauses") if isinstance(rule, dict) else None
        for clause in clauses if isinstance(clauses, list) else ():
            if isinstance(clause, dict) and clause.get("op") == "segment":
                values = clause.get("values")
                if isinstance(values, list):
                    wanted.update(value for value in values if isinstance(value, str))
    if not wanted:
        return []
    return list(
        Segment.objects.filter(key__in=sorted(wanted)).values_list("key", flat=True)
    )


def _validate(state: FlagState) -> None:
    keys = state.flag.variation_keys
    if state.off_variation not in keys:
        raise InvalidInput(
            f"off_variation: unknown variation {state.off_variation!r}",
            field="off_variation",
        )
    if not isinstance(state.bucket_by, str) or not state.bucket_by.strip():
        raise InvalidInput("bucket_by: is required", field="bucket_by")
    try:
        state.rules = validation.validate_rules(
            state.rules, keys, _segment_keys(state.rules)
        )
        state.fallthrough = validation.validate_serve(
            state.fallthrough, keys, "fallthrough"
        )
    except engine.RulesetError as exc:
        raise invalid_from(exc) from None


def _change_state(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    expected_version: int | None,
    action: str,
    mutate: Callable[[FlagState], None],
    details: dict | None = None,
    allow_archived: bool = False,
) -> FlagState:
    with audited_transaction(chains=[environment_chain(environment.key)]):
        state = _lock_state(flag, environment)
        if expected_version is not None and expected_version != state.version:
            raise VersionConflict(
                what=f"{state.flag.key} in {state.environment.key}",
                expected=expected_version,
                current=state.version,
            )
        if state.flag.archived and not allow_archived:
            raise Conflict(f"flag {state.flag.key!r} is archived", field="flag")
        before = state_snapshot(state)
        mutate(state)
        _validate(state)
        after = state_snapshot(state)
        if after == before:
            return state  # nothing changes: no version bump, no event
        state.version += 1
        after["version"] = state.version
        _save_and_bump(state)
        record_audit_event(
            actor=actor,
            action=action,
            target=state,
            environment=state.environment.key,
            before=before,
            after=after,
            details=details or {},
        )
    return state


def _lock_state(flag: Flag, environment: Environment) -> FlagState:
    """Return the state row of ``flag`` in ``environment``, locked until commit.

    One plain statement (``FOR UPDATE`` where the database has it) instead
    of the ORM's select_related query: this runs in every audited change.
    The flag's ``archived`` is read in the same statement, so the check sees
    the current row, not the caller's copy (environments are never renamed).
    """
    states, flags = FlagState._meta.db_table, Flag._meta.db_table
    lock = " FOR UPDATE OF s" if connection.features.has_select_for_update_of else ""
    rows = list(
        FlagState.objects.raw(
            f"SELECT s.*, f.archived AS flag_archived"
            f" FROM {states} s JOIN {flags} f ON f.id = s.flag_id"
            f" WHERE s.flag_id = %s AND s.environment_id = %s{lock}",
            [flag.pk, environment.pk],
        )
    )
    if not rows:
        raise FlagState.DoesNotExist(
            f"flag {flag.key!r} has no state in {environment.key!r}"
        )
    state = rows[0]
    flag.archived = state.flag_archived
    state.flag = flag
    state.environment = environment
    return state


_SAVED_FIELDS = [
    field
    for field in FlagState._meta.concrete_fields
    if field.name not in ("id", "flag", "environment", "changed_in_version")
]


def _save_and_bump(state: FlagState) -> None:
    """Save the state, bump its environment's ruleset version, remember it.

    What ``state.save()`` and ``bump_rulesets(flag_ids=...)`` do, in one
    statement on PostgreSQL (a data-modifying WITH) and two elsewhere, with
    no ORM query building: every audited flag change runs it.
    """
    from flags import propagation

    state.updated_at = timezone.now()
    states, environments = FlagState._meta.db_table, Environment._meta.db_table
    quote = connection.ops.quote_name
    assignments = ", ".join(f"{quote(field.column)} = %s" for field in _SAVED_FIELDS)
    values = [
        field.get_db_prep_save(getattr(state, field.attname), connection)
        for field in _SAVED_FIELDS
    ]
    bump = (
        f"UPDATE {environments} SET ruleset_version = ruleset_version + 1 WHERE id = %s"
    )
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                f"WITH bumped AS ({bump} RETURNING ruleset_version)"
                f" UPDATE {states} SET {assignments}, changed_in_version ="
                " (SELECT ruleset_version FROM bumped) WHERE id = %s",
                [state.environment_id, *values, state.pk],
            )
        else:
            cursor.execute(bump, [state.environment_id])
            cursor.execute(
                f"UPDATE {states} SET {assignments}, changed_in_version ="
                f" (SELECT ruleset_version FROM {environments} WHERE id = %s)"
                " WHERE id = %s",
                [*values, state.environment_id, state.pk],
            )
    propagation.announce(environment_ids=[state.environment_id])


def flag_state_update(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    expected_version: int | None,
    enabled: bool = _UNSET,
    off_variation: str = _UNSET,
    rules: list = _UNSET,
    fallthrough: dict = _UNSET,
    bucket_by: str = _UNSET,
) -> FlagState:
    """Replace any of a state's serving fields, based on ``expected_version``.

    Raises VersionConflict (with the current version) when the state moved
    since the caller read it; nothing is merged or written then.
    """

    def mutate(state: FlagState) -> None:
        if enabled is not _UNSET:
            if not isinstance(enabled, bool):
                raise InvalidInput("enabled: must be true or false", field="enabled")
            state.enabled = enabled
            if enabled:
                state.killed_at, state.kill_reason = None, ""
        if off_variation is not _UNSET:
            state.off_variation = off_variation
        if rules is not _UNSET:
            state.rules = rules
        if fallthrough is not _UNSET:
            state.fallthrough = fallthrough
        if bucket_by is not _UNSET:
            state.bucket_by = bucket_by

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=expected_version,
        action="flag_state.updated",
        mutate=mutate,
    )


def percentage_split(
    flag: Flag, percentage: float, treatment: str | None, control: str | None
) -> dict:
    """Return the fallthrough split serving ``treatment`` to ``percentage``%.

    The treatment arm comes first, so raising the percentage only adds
    merchants to it and lowering only removes them (sticky, monotonic).
    """
    keys = flag.variation_keys
    if flag.value_type == "bool":
        treatment, control = treatment or "on", control or "off"
    if not treatment or not control:
        raise InvalidInput(
            "treatment: a non-bool flag needs a treatment and a control variation",
            field="treatment",
        )
    for name, key in (("treatment", treatment), ("control", control)):
        if key not in keys:
            raise InvalidInput(f"{name}: unknown variation {key!r}", field=name)
    if treatment == control:
        raise InvalidInput("control: must differ from the treatment", field="control")
    try:
        weight = validation.percent_to_weight(percentage)
    except engine.RulesetError as exc:
        raise invalid_from(exc) from None
    return {
        "split": [
            {"variation": treatment, "weight": weight},
            {"variation": control, "weight": engine.BUCKETS - weight},
        ]
    }


def flag_state_set_percentage(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    percentage: float,
    expected_version: int | None = None,
    treatment: str | None = None,
    control: str | None = None,
) -> FlagState:
    """Serve ``treatment`` (``on`` for bool flags) to ``percentage``% by default.

    Overrides and rules still come first. Accepts 0.001% steps.
    """
    split = percentage_split(flag, percentage, treatment, control)

    def mutate(state: FlagState) -> None:
        state.fallthrough = split

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=expected_version,
        action="flag_state.percentage_set",
        mutate=mutate,
        details={"percentage": percentage, "treatment": split["split"][0]["variation"]},
    )


def flag_state_serve(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    variation: str,
    expected_version: int | None = None,
) -> FlagState:
    """Serve one variation to everyone not matched by an override or rule."""

    def mutate(state: FlagState) -> None:
        state.fallthrough = {"variation": variation}

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=expected_version,
        action="flag_state.fallthrough_set",
        mutate=mutate,
        details={"variation": variation},
    )


def flag_state_set_enabled(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    enabled: bool,
    expected_version: int | None = None,
) -> FlagState:
    """Turn targeting on (rules, overrides, fallthrough apply) or off."""

    def mutate(state: FlagState) -> None:
        state.enabled = enabled
        state.killed_at, state.kill_reason = None, ""

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=expected_version,
        action="flag_state.enabled" if enabled else "flag_state.disabled",
        mutate=mutate,
    )


def flag_state_kill(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    reason: str = "",
) -> FlagState:
    """Kill switch: everyone gets the off variation, now. Idempotent.

    Never refused for a version: an emergency stop must not lose a race.
    """

    def mutate(state: FlagState) -> None:
        if state.killed_at is None or state.enabled:
            state.killed_at = timezone.now()
            state.kill_reason = reason[:500]
        state.enabled = False

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=None,
        action="flag_state.killed",
        mutate=mutate,
        details={"reason": reason},
        allow_archived=True,
    )


def flag_state_restore(
    *, actor: Any, flag: Flag, environment: Environment, reason: str = ""
) -> FlagState:
    """Undo a kill: targeting on again, as it was before the kill."""

    def mutate(state: FlagState) -> None:
        if state.killed_at is None:
            raise Conflict(
                f"{flag.key} in {environment.key} is not killed", field="flag"
            )
        state.enabled = True
        state.killed_at, state.kill_reason = None, ""

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=None,
        action="flag_state.restored",
        mutate=mutate,
        details={"reason": reason},
    )


def flag_state_restore_snapshot(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    snapshot: dict,
    reason: str = "",
) -> FlagState:
    """Put a state back to a captured ``state_snapshot`` (used by rollbacks)."""

    def mutate(state: FlagState) -> None:
        state.enabled = snapshot["enabled"]
        state.off_variation = snapshot["off_variation"]
        state.rules = snapshot["rules"]
        state.fallthrough = snapshot["fallthrough"]
        state.bucket_by = snapshot.get("bucket_by", "merchant")
        if snapshot.get("killed"):
            state.killed_at = state.killed_at or timezone.now()
        else:
            state.killed_at, state.kill_reason = None, ""

    return _change_state(
        actor=actor,
        flag=flag,
        environment=environment,
        expected_version=None,
        action="flag_state.restored_snapshot",
        mutate=mutate,
        details={"reason": reason},
        allow_archived=True,
    )
