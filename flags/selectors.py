"""Reads shared by the admin, commands, API and services."""

from __future__ import annotations

from django.db.models import QuerySet
from django.utils import timezone

from controlplane.exceptions import NotFound
from flags.models import (
    Environment,
    Flag,
    FlagState,
    Merchant,
    MerchantOverride,
    Segment,
)


def environment_get(key: str) -> Environment:
    """Return the environment ``key`` or raise NotFound."""
    try:
        return Environment.objects.get(key=key)
    except Environment.DoesNotExist:
        known = ", ".join(Environment.objects.values_list("key", flat=True)) or "none"
        raise NotFound(
            f"unknown environment {key!r} (known: {known})", field="environment"
        ) from None


def flag_get(key: str) -> Flag:
    """Return the flag ``key`` (archived or not) or raise NotFound."""
    try:
        return Flag.objects.get(key=key)
    except Flag.DoesNotExist:
        raise NotFound(f"unknown flag {key!r}", field="flag") from None


def merchant_get(key: str) -> Merchant:
    """Return the merchant ``key`` or raise NotFound."""
    try:
        return Merchant.objects.get(key=key)
    except Merchant.DoesNotExist:
        raise NotFound(f"unknown merchant {key!r}", field="merchant") from None


def segment_get(key: str) -> Segment:
    try:
        return Segment.objects.get(key=key)
    except Segment.DoesNotExist:
        raise NotFound(f"unknown segment {key!r}", field="segment") from None


def flag_state_get(*, flag: Flag, environment: Environment) -> FlagState:
    """Return the state of ``flag`` in ``environment``."""
    try:
        return FlagState.objects.select_related("flag", "environment").get(
            flag=flag, environment=environment
        )
    except FlagState.DoesNotExist:
        raise NotFound(
            f"flag {flag.key!r} has no state in {environment.key!r}"
        ) from None


def flag_list(*, include_archived: bool = False) -> QuerySet[Flag]:
    flags = Flag.objects.prefetch_related("states__environment")
    return flags if include_archived else flags.filter(archived=False)


def override_list(
    *,
    flag: Flag | None = None,
    environment: Environment | None = None,
    merchant: Merchant | None = None,
    live_only: bool = False,
) -> QuerySet[MerchantOverride]:
    overrides = MerchantOverride.objects.select_related(
        "flag", "environment", "merchant"
    )
    if flag is not None:
        overrides = overrides.filter(flag=flag)
    if environment is not None:
        overrides = overrides.filter(environment=environment)
    if merchant is not None:
        overrides = overrides.filter(merchant=merchant)
    if live_only:
        from django.db.models import Q

        overrides = overrides.filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=timezone.now())
        )
    return overrides
