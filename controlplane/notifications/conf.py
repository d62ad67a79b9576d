"""Settings of notifications, read from ``settings.CONTROLPLANE`` at call time."""

from __future__ import annotations

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Attempts per delivery (the first one included) before it is failed.
    "NOTIFY_MAX_ATTEMPTS": 5,
    # Exponential backoff between attempts: base * 2**(attempt-1), capped.
    "NOTIFY_RETRY_BACKOFF_SECONDS": 5.0,
    "NOTIFY_RETRY_BACKOFF_MAX_SECONDS": 600.0,
    # Connect/read timeout of one webhook request (seconds).
    "NOTIFY_TIMEOUT_SECONDS": 5.0,
    # The beat task re-queues a delivery still pending this long after it was
    # created, or retrying this long past its next attempt (a lost task).
    "NOTIFY_STALE_SECONDS": 300.0,
    # Without a broker (eager Celery, the zero-setup server) send from a
    # thread of the process rather than inline after commit; the tests send
    # inline (False) to assert on what was sent.
    "NOTIFY_EAGER_IN_THREAD": True,
    # Base URL of this control plane ("https://cp.example.com"); when set,
    # messages carry a link to the admin page of what changed.
    "SITE_URL": "",
}


def notify_setting(name: str) -> Any:
    """Return notification setting ``name``, falling back to its default."""
    overrides = getattr(settings, "CONTROLPLANE", {}) or {}
    if name in overrides:
        return overrides[name]
    return DEFAULTS[name]
