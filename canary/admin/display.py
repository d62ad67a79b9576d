"""How the canary admin shows a value: statuses and verdicts in their tone,
times with seconds and how long ago (the console's ``tone`` and ``when``),
phase numbers 1-based."""

from __future__ import annotations

import datetime as dt

from django.utils.html import format_html
from django.utils.safestring import SafeString

from controlplane.console.templatetags.console import tone, when


def tone_html(value: object, text: str | None = None) -> SafeString:
    """Return a status or verdict as a coloured badge."""
    if value in (None, ""):
        return format_html("{}", "-")
    shown = str(value).replace("_", " ") if text is None else text
    return format_html('<span class="tone tone-{}">{}</span>', tone(value), shown)


def when_html(value: dt.datetime | None) -> SafeString:
    """Return a time with seconds and how long ago."""
    return format_html("{}", when(value))


def phase_text(index: int | None, count: int | None = None, name: str = "") -> str:
    """Return a phase as people read it: 1-based, ``phase 2 of 4 (10%)``."""
    if index is None:
        return "-"
    text = f"phase {index + 1}" + (f" of {count}" if count else "")
    return text + (f" ({name})" if name else "")
