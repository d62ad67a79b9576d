"""Template tags of the operator console: ``{% load console %}``.

- ``{{ value|when }}``: a time with seconds and how long ago, in a
  ``<time>`` element (``2026-12-01 18:20:31 UTC · 3 minutes ago``).
- ``{{ status|tone }}``: the tone class of a status or verdict
  (``ok``, ``warn``, ``wait``, ``bad``, ``neutral``).
"""

from __future__ import annotations

import datetime as dt

from django import template
from django.contrib.humanize.templatetags.humanize import naturaltime
from django.utils import timezone
from django.utils.html import format_html

register = template.Library()

TONES = {
    # rollouts
    "running": "ok",
    "completed": "ok",
    "awaiting_approval": "wait",
    "draft": "neutral",
    "paused": "warn",
    "rolling_back": "bad",
    "rolled_back": "bad",
    "aborted": "neutral",
    # check verdicts
    "pass": "ok",
    "passing": "ok",
    "not_worse": "ok",
    "inconclusive": "wait",
    "not_yet": "wait",
    "wait": "wait",
    "fail": "bad",
    "failing": "bad",
    "worse": "bad",
    "error": "warn",
    # rollback runs and steps
    "pending": "wait",
    "succeeded": "ok",
    "failed": "bad",
    "skipped": "neutral",
    # flags
    "killed": "bad",
    "on": "ok",
    "off": "neutral",
}


@register.filter
def tone(value: object) -> str:
    """Return the tone of a status or verdict, ``neutral`` when unknown."""
    return TONES.get(str(value or "").strip().lower().replace(" ", "_"), "neutral")


@register.filter
def when(value: dt.datetime | None) -> str:
    """Render a time with seconds and its distance from now."""
    if value is None:
        return "—"
    local = timezone.localtime(value) if timezone.is_aware(value) else value
    return format_html(
        '<time class="when" datetime="{}">{} <small>· {}</small></time>',
        value.isoformat(),
        local.strftime("%Y-%m-%d %H:%M:%S %Z").strip(),
        naturaltime(value),
    )


# alert triggers (flags.admin.trigger_admin)
TONES.update({"armed": "ok", "revoked": "neutral"})
# Change requests and scheduled changes (flags.changes)
TONES.update(
    {
        "approved": "wait",
        "applying": "wait",
        "scheduled": "wait",
        "applied": "ok",
        "rejected": "bad",
        "refused": "bad",
        "cancelled": "neutral",
    }
)
# Rollout report (canary.report): verdicts, phase outcomes, gate decisions,
# check statuses and verification states.
TONES.update(
    {
        "proceed": "ok",
        "fix_and_re-test": "warn",
        "roll_back": "bad",
        "passed": "ok",
        "not_reached": "neutral",
        "current_(running)": "ok",
        "current_(paused)": "warn",
        "current_(awaiting_approval)": "wait",
        "advance": "ok",
        "rollback": "bad",
        "pause": "warn",
        "await_approval": "wait",
        "abort": "neutral",
        "resume": "ok",
        "escalation": "bad",
        "no_data": "neutral",
        "errored": "warn",
        "verifying": "wait",
        "escalating": "bad",
        "recovered": "ok",
        "exhausted": "bad",
    }
)
# Releases (canary.admin.release_admin): the scope of a rollback.
TONES.update({"partial": "warn", "whole": "bad", "member": "warn"})
