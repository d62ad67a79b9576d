"""The canary's clock: every phase-time decision reads the time here.

One function, so a test or a simulator can replace it (``monkeypatch`` or
assignment) instead of sleeping.
"""

from __future__ import annotations

import datetime as dt

from django.utils import timezone


def now() -> dt.datetime:
    """Return the current time (aware, UTC)."""
    return timezone.now()
