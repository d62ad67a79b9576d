"""The home page at ``/``: what needs an operator's eyes now.

Active rollouts with their phase and health, the controller's decisions
of the last 24 hours, killed flags and rollback runs in progress. Signed-in
staff see it; anyone else goes to the login. A read: no write, a fixed
number of queries whatever the data.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.db.models import Count
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone

from canary.models import HealthCheck, Phase, Rollout, RolloutStatus
from controlplane.audit.models import AuditEvent
from flags.models import FlagState
from rollback.models import RollbackRun, RunStatus

ACTIVE = (
    RolloutStatus.RUNNING,
    RolloutStatus.PAUSED,
    RolloutStatus.AWAITING_APPROVAL,
    RolloutStatus.ROLLING_BACK,
)
DECISIONS_SHOWN = 50
# What the colour of a status or verdict says (CSS classes in home.html).
TONES = {
    "running": "ok",
    "completed": "ok",
    "pass": "ok",
    "succeeded": "ok",
    "paused": "warn",
    "awaiting_approval": "warn",
    "not_yet": "wait",
    "pending": "wait",
    "rolling_back": "bad",
    "rolled_back": "bad",
    "fail": "bad",
    "failed": "bad",
    "error": "bad",
}


DECISION_TONES = {
    "advance": "ok",
    "complete": "ok",
    "pause": "warn",
    "await_approval": "warn",
    "fail": "bad",
    "rollback": "bad",
    "escalate": "bad",
}


def _tone(value: str) -> str:
    return TONES.get(value, "neutral")


def _active_rollouts() -> list[dict[str, Any]]:
    rollouts = list(
        Rollout.objects.filter(status__in=ACTIVE)
        .select_related("flag", "environment")
        .annotate(phase_count=Count("phases", distinct=True))
        .order_by("-started_at", "-pk")
    )
    ids = [r.pk for r in rollouts]
    phases = {
        (p.rollout_id, p.index): p for p in Phase.objects.filter(rollout_id__in=ids)
    }
    checks: dict[int, list[HealthCheck]] = {}
    for check in HealthCheck.objects.filter(rollout_id__in=ids).order_by("name"):
        checks.setdefault(check.rollout_id, []).append(check)
    rows = []
    for rollout in rollouts:
        phase = phases.get((rollout.pk, rollout.current_phase))
        rows.append(
            {
                "rollout": rollout,
                "url": reverse("admin:canary_rollout_change", args=[rollout.pk]),
                # Phases are numbered from 1 wherever a person reads them.
                "phase": f"{rollout.current_phase + 1}/{rollout.phase_count}",
                "phase_name": phase.name if phase else "",
                "status_tone": _tone(rollout.status),
                "checks": [
                    {
                        "name": c.name,
                        "verdict": (c.last_verdict or "no run yet").replace("_", " "),
                        "tone": _tone(c.last_verdict),
                        "dry_run": c.dry_run,
                    }
                    for c in checks.get(rollout.pk, [])
                ],
                "why": rollout.pause_reason,
            }
        )
    return rows


def _decision_text(event: AuditEvent) -> str:
    details = event.details or {}
    for key in ("reason", "decision"):
        if isinstance(details.get(key), str) and details[key]:
            return details[key]
    return ""


def _decisions(now: dt.datetime) -> list[dict[str, Any]]:
    events = AuditEvent.objects.filter(
        actor_type="controller", created_at__gte=now - dt.timedelta(hours=24)
    ).order_by("-created_at", "-id")[:DECISIONS_SHOWN]
    return [
        {
            "event": event,
            "url": reverse("admin:audit_auditevent_change", args=[event.pk]),
            "why": _decision_text(event),
            "decision": (event.details or {}).get("decision", ""),
            "tone": DECISION_TONES.get(
                (event.details or {}).get("decision"), "neutral"
            ),
        }
        for event in events
    ]


def overview(now: dt.datetime | None = None) -> dict[str, Any]:
    """Return what the home page shows."""
    now = now or timezone.now()
    return {
        "now": now,
        "rollouts": _active_rollouts(),
        "decisions": _decisions(now),
        "killed": list(
            FlagState.objects.filter(killed_at__isnull=False)
            .select_related("flag", "environment")
            .order_by("-killed_at")
        ),
        "runs": [
            {
                "run": run,
                "url": reverse("admin:rollback_rollbackrun_change", args=[run.pk]),
                "tone": _tone(run.status),
            }
            for run in RollbackRun.objects.filter(
                status__in=[RunStatus.PENDING, RunStatus.RUNNING]
            )
            .select_related("deployment")
            .order_by("-created_at")
        ],
    }


@staff_member_required
def home(request: HttpRequest) -> HttpResponse:
    """``/``: the overview for signed-in staff (others: the admin login)."""
    from django.contrib import admin

    context = {
        **admin.site.each_context(request),
        **overview(),
        "title": "Overview",
    }
    return render(request, "canary/home.html", context)
