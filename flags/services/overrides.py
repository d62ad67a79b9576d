"""Per-merchant overrides: a merchant gets a variation whatever the rollout says."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Q
from django.utils import timezone

from controlplane.audit.actors import SYSTEM
from controlplane.audit.services import (
    audited_transaction,
    environment_chain,
    record_audit_event,
)
from controlplane.exceptions import Conflict, InvalidInput, NotFound
from flags.models import Environment, Flag, Merchant, MerchantOverride
from flags.services._common import bump_rulesets


def _override_snapshot(override: MerchantOverride) -> dict[str, Any]:
    return {
        "flag": override.flag.key,
        "merchant": override.merchant.key,
        "variation": override.variation,
        "note": override.note,
        "expires_at": override.expires_at,
    }


def override_set(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    merchant: Merchant,
    variation: str,
    note: str = "",
    expires_at: dt.datetime | None = None,
) -> MerchantOverride:
    """Give ``merchant`` ``variation`` of ``flag`` in ``environment``.

    Creates the override or replaces the one in force. Refuses an inactive
    merchant, an archived flag, an unknown variation, or an expiry in the past.
    """
    if flag.archived:
        raise Conflict(f"flag {flag.key!r} is archived", field="flag")
    if variation not in flag.variation_keys:
        raise InvalidInput(
            f"variation: {variation!r} is not a variation of {flag.key} "
            f"({', '.join(flag.variation_keys)})",
            field="variation",
        )
    if expires_at is not None:
        if timezone.is_naive(expires_at):
            raise InvalidInput("expires_at: needs a time zone", field="expires_at")
        if expires_at <= timezone.now():
            raise InvalidInput("expires_at: must be in the future", field="expires_at")
    with audited_transaction(chains=[environment_chain(environment.key)]):
        merchant = Merchant.objects.select_for_update().get(pk=merchant.pk)
        if not merchant.is_active:
            raise Conflict(f"merchant {merchant.key!r} is inactive", field="merchant")
        existing = (
            MerchantOverride.objects.select_for_update()
            .select_related("flag", "merchant")
            .filter(flag=flag, environment=environment, merchant=merchant)
            .first()
        )
        before = _override_snapshot(existing) if existing else None
        override = existing or MerchantOverride(
            flag=flag, environment=environment, merchant=merchant
        )
        override.variation = variation
        override.note = note[:500]
        override.expires_at = expires_at
        override.created_by = getattr(actor, "name", "") or str(actor)
        after = _override_snapshot(override)
        if before == after:
            return override
        override.save()
        record_audit_event(
            actor=actor,
            action="override.updated" if existing else "override.created",
            target=override,
            environment=environment.key,
            before=before,
            after=after,
            details={"merchant": merchant.key, "flag": flag.key},
        )
        bump_rulesets([environment.pk], flag_ids=[flag.pk])
    return override


def override_remove(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    merchant: Merchant,
    reason: str = "",
) -> None:
    """Remove the merchant's override; raise NotFound when there is none."""
    with audited_transaction(chains=[environment_chain(environment.key)]):
        override = (
            MerchantOverride.objects.select_for_update()
            .select_related("flag", "merchant")
            .filter(flag=flag, environment=environment, merchant=merchant)
            .first()
        )
        if override is None:
            raise NotFound(
                f"merchant {merchant.key!r} has no override of {flag.key} in {environment.key}",
                field="merchant",
            )
        _delete(override, actor=actor, action="override.removed", reason=reason)


def _delete(
    override: MerchantOverride, *, actor: Any, action: str, reason: str
) -> None:
    before = _override_snapshot(override)
    record_audit_event(
        actor=actor,
        action=action,
        target=override,
        environment=override.environment.key,
        before=before,
        after=None,
        details={
            "merchant": override.merchant.key,
            "flag": override.flag.key,
            "reason": reason,
        },
    )
    environment_id, flag_id = override.environment_id, override.flag_id
    override.delete()
    bump_rulesets([environment_id], flag_ids=[flag_id])


def overrides_purge_expired(
    *, actor: Any = SYSTEM, now: dt.datetime | None = None
) -> int:
    """Delete overrides past their expiry, one audited removal each.

    The engine already ignores them from their expiry on; this keeps the
    tables and the admin honest. Return how many were removed.
    """
    now = now or timezone.now()
    removed = 0
    expired_ids = list(
        MerchantOverride.objects.filter(expires_at__lte=now).values_list(
            "pk", flat=True
        )
    )
    for pk in expired_ids:
        with audited_transaction():
            override = (
                MerchantOverride.objects.select_for_update(skip_locked=True)
                .select_related("flag", "merchant", "environment")
                .filter(Q(pk=pk) & Q(expires_at__lte=now))
                .first()
            )
            if override is None:
                continue  # already removed or extended by someone else
            _delete(override, actor=actor, action="override.expired", reason="expired")
            removed += 1
    return removed
