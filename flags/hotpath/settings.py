"""Settings the hot path reads on every request, without the lazy proxy's cost.

``django.conf.settings`` keeps each setting it has served in its own
``__dict__`` and empties that dict whenever the settings change
(``override_settings``, the test ``settings`` fixture, assignment). Reading
that dict first costs a dict lookup instead of the proxy's attribute
machinery, and still follows every change: a missing entry is read through
the proxy, which caches it again.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings

from controlplane.conf import DEFAULTS

_cached: dict[str, Any] = settings.__dict__
_MISSING = object()


def django_setting(name: str) -> Any:
    """Return ``settings.<name>`` (``None`` when it is not set)."""
    value = _cached.get(name, _MISSING)
    if value is _MISSING:
        value = getattr(settings, name, None)
    return value


def max_body_bytes() -> int:
    """Return ``EVAL_MAX_BODY_BYTES`` as ``controlplane.conf.setting`` would."""
    overrides = django_setting("CONTROLPLANE") or {}
    if "EVAL_MAX_BODY_BYTES" in overrides:
        return overrides["EVAL_MAX_BODY_BYTES"]
    return DEFAULTS["EVAL_MAX_BODY_BYTES"]
