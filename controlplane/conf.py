"""The project's own settings: one namespaced dict with defaults.

Read values with ``setting("NAME")`` at call time, never at import time, so
tests can override ``settings.CONTROLPLANE``.
"""
from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Ruleset refresh: how often a serving process polls ruleset versions.
    "RULESET_POLL_INTERVAL": 0.25,
    # Management API: most merchants one bulk upsert accepts.
    "MERCHANT_BULK_UPSERT_MAX": 1000,
    # Audit: how many history rows the CLI prints after an override change.
    "AUDIT_HISTORY_LIMIT": 10,
    # Demo data: the admin login printed by `manage.py demo`.
    "DEMO_ADMIN_USERNAME": "admin",
    "DEMO_ADMIN_PASSWORD": "admin",
}


def setting(name: str) -> Any:
    """Return the project setting ``name``, falling back to its default."""
    overrides = getattr(settings, "CONTROLPLANE", {}) or {}
    if name in overrides:
        return overrides[name]
    try:
        return DEFAULTS[name]
    except KeyError:
        raise KeyError(f"unknown CONTROLPLANE setting {name!r}") from None
