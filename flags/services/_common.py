"""Helpers shared by the flag services (not part of the public API)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F, Model

from controlplane.exceptions import InvalidInput
from flags.engine import RulesetError
from flags.models import Environment, FlagState


def invalid_from(exc: RulesetError | ValidationError, prefix: str = "") -> InvalidInput:
    """Turn an engine or model validation error into one field-level InvalidInput."""
    if isinstance(exc, RulesetError):
        field = f"{prefix}.{exc.field}" if prefix else exc.field
        return InvalidInput(f"{field}: {exc.message}", field=field)
    if hasattr(exc, "message_dict"):
        field, messages = next(iter(exc.message_dict.items()))
        field = "" if field == "__all__" else field
        message = f"{field}: {messages[0]}" if field else messages[0]
        return InvalidInput(message, field=field or None)
    return InvalidInput(exc.messages[0])


def full_clean(obj: Model, exclude: Iterable[str] | None = None) -> None:
    """Run model validation, raising InvalidInput for the first problem."""
    try:
        obj.full_clean(exclude=list(exclude or ()))
    except ValidationError as exc:
        raise invalid_from(exc) from None


def bump_rulesets(
    environment_ids: Iterable[int], *, flag_ids: Iterable[int] | None = None
) -> None:
    """Move the ruleset version of these environments, in the caller's transaction.

    Serving processes compare versions to know their compiled ruleset is old.
    With ``flag_ids``, only those flags changed: their states remember the
    new version, and a serving process recompiles just them. Without, the
    change touches the whole environment (registry, segments), and serving
    processes reload it all.
    """
    ids = sorted(set(environment_ids))
    if not ids:
        return
    if flag_ids is None:
        Environment.objects.filter(pk__in=ids).update(
            ruleset_version=F("ruleset_version") + 1,
            full_reload_version=F("ruleset_version") + 1,
        )
    else:
        _bump_flags(ids, sorted(set(flag_ids)))
    from flags import propagation

    propagation.announce(environment_ids=ids)


def _bump_flags(environment_ids: list[int], flag_ids: list[int]) -> None:
    """Bump the environments' versions; their states of ``flag_ids`` remember it.

    Two plain statements (the same on PostgreSQL and SQLite): this runs in
    every audited flag change, and building them through the ORM cost more
    CPU than the rest of the change (bench/_scale_writes.py).
    """
    environments = Environment._meta.db_table
    states = FlagState._meta.db_table
    in_environments = ", ".join(["%s"] * len(environment_ids))
    in_flags = ", ".join(["%s"] * len(flag_ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {environments} SET ruleset_version = ruleset_version + 1"
            f" WHERE id IN ({in_environments})",
            environment_ids,
        )
        # the subquery reads this transaction's own, still locked, update
        cursor.execute(
            f"UPDATE {states} SET changed_in_version = (SELECT e.ruleset_version"
            f" FROM {environments} e WHERE e.id = {states}.environment_id)"
            f" WHERE environment_id IN ({in_environments})"
            f" AND flag_id IN ({in_flags})",
            [*environment_ids, *flag_ids],
        )


def bump_all_rulesets() -> None:
    bump_rulesets(Environment.objects.values_list("pk", flat=True))


def state_snapshot(state: FlagState) -> dict[str, Any]:
    """Return what evaluation depends on in a flag state (audit before/after)."""
    return {
        "enabled": state.enabled,
        "off_variation": state.off_variation,
        "rules": state.rules,
        "fallthrough": state.fallthrough,
        "bucket_by": state.bucket_by,
        "killed": state.killed_at is not None,
        "version": state.version,
    }


def require_atomic() -> None:
    assert transaction.get_connection().in_atomic_block
