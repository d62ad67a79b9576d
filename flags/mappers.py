"""ORM rows -> the engine's plain ruleset data: the only module that knows both."""

from __future__ import annotations

from typing import Any

from django.db.models import Q
from django.utils import timezone

from flags import engine
from flags.models import Environment, FlagState, Merchant, MerchantOverride, Segment


def ruleset_data(environment: Environment) -> dict[str, Any]:
    """Return the JSON-shaped ruleset of ``environment`` at its current version.

    Read the version first: if a change commits while this runs, the data
    may be newer than the version it carries, never older, so the next
    version check reloads it.
    """
    version = (
        Environment.objects.filter(pk=environment.pk)
        .values_list("ruleset_version", flat=True)
        .get()
    )
    now = timezone.now()
    overrides: dict[int, list[dict]] = {}
    live = MerchantOverride.objects.filter(
        environment=environment, flag__archived=False
    ).filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
    for flag_id, merchant_key, variation, expires_at in live.values_list(
        "flag_id", "merchant__key", "variation", "expires_at"
    ).iterator(chunk_size=5000):
        overrides.setdefault(flag_id, []).append(
            {
                "merchant": merchant_key,
                "variation": variation,
                "expires_at": expires_at.timestamp() if expires_at else None,
            }
        )
    flags = []
    states = FlagState.objects.filter(
        environment=environment, flag__archived=False
    ).select_related("flag")
    for state in states.order_by("flag__key"):
        flag = state.flag
        flags.append(
            {
                "key": flag.key,
                "value_type": flag.value_type,
                "variations": flag.variations,
                "enabled": state.enabled,
                "off_variation": state.off_variation,
                "rules": state.rules,
                "fallthrough": state.fallthrough,
                "bucket_by": state.bucket_by,
                "state_version": state.version,
                "overrides": overrides.get(flag.pk, []),
            }
        )
    segments = {
        key: {"clauses": clauses}
        for key, clauses in Segment.objects.values_list("key", "clauses")
    }
    merchants = {
        key: attributes
        for key, attributes in Merchant.objects.filter(is_active=True)
        .exclude(attributes={})
        .values_list("key", "attributes")
        .iterator(chunk_size=5000)
    }
    return {
        "environment": environment.key,
        "version": version,
        "generated_at": now.isoformat(),
        "flags": flags,
        "segments": segments,
        "merchants": merchants,
    }


def ruleset_compile(environment: Environment) -> engine.Ruleset:
    """Return the compiled ruleset of ``environment``."""
    return engine.compile_ruleset(ruleset_data(environment))
