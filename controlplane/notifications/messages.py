"""What an audit event means for people: its kind, a short line, a JSON body.

Pure mapping from the audit event's columns, plus a read of the rollout's
phases for "phase 2/4 (10%)". The rollout is looked up by app label
(``apps.get_model``), not imported: this app sits in the bottom layer.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.urls import NoReverseMatch, reverse

from controlplane.audit.models import AuditEvent
from controlplane.notifications.conf import notify_setting
from controlplane.notifications.models import Kind

_TRANSITION_KINDS = {
    "awaiting_approval": Kind.ROLLOUT_AWAITING_APPROVAL,
    "paused": Kind.ROLLOUT_PAUSED,
    "rolling_back": Kind.ROLLOUT_ROLLED_BACK,
    "rolled_back": Kind.ROLLOUT_ROLLED_BACK,
    "completed": Kind.ROLLOUT_COMPLETED,
    "aborted": Kind.ROLLOUT_ABORTED,
}
_ACTION_KINDS = {
    "rollout.phase_advanced": Kind.ROLLOUT_ADVANCED,
    "rollout.rollback_escalated": Kind.ROLLOUT_ESCALATED,
    "rollout.rollback_failed": Kind.ROLLOUT_ROLLBACK_FAILED,
    "release.started": Kind.RELEASE_STARTED,
    "release.partially_rolled_back": Kind.RELEASE_PARTIALLY_ROLLED_BACK,
    "release.rollback_started": Kind.RELEASE_ROLLED_BACK,
    "release.rolled_back": Kind.RELEASE_ROLLED_BACK,
    "release.completed": Kind.RELEASE_COMPLETED,
    "release.aborted": Kind.RELEASE_ABORTED,
    "flag_state.killed": Kind.FLAG_KILLED,
    "flag_state.restored": Kind.FLAG_RESTORED,
}
# Every action that may notify; any other event costs no query.
ACTIONS = frozenset({"rollout.transition", *_ACTION_KINDS})


@dataclass(frozen=True)
class Notice:
    kind: str
    message: str
    body: str  # JSON text, signed as is


def kind_of(action: str, details: dict) -> str | None:
    """Return the notification kind of an audit action, or None."""
    if action == "rollout.transition":
        to, came_from = details.get("to"), details.get("from")
        if to == "running":
            return Kind.ROLLOUT_STARTED if came_from == "draft" else None
        return _TRANSITION_KINDS.get(to)
    return _ACTION_KINDS.get(action)


def _rollout_facts(rollout_id: str) -> dict[str, Any]:
    try:
        rollout_model = apps.get_model("canary", "Rollout")
    except LookupError:
        return {}
    row = (
        rollout_model.objects.filter(pk=rollout_id)
        .values("name", "flag__key", "current_phase")
        .first()
    )
    if row is None:
        return {}
    return {
        "name": row["name"],
        "flag": row["flag__key"],
        "phases": _phases_of(rollout_id),
    }


def _phases_of(rollout_id: Any) -> list[dict]:
    """Return a rollout's phases as ``_phase_text`` reads them."""
    return list(
        apps.get_model("canary", "Phase")
        .objects.filter(rollout_id=rollout_id)
        .order_by("index")
        .values("index", "name", "target_type", "percentage", "pilot_merchants")
    )


def _phase_text(phases: list[dict], index: Any) -> str:
    if not isinstance(index, int) or not 0 <= index < len(phases):
        return ""
    phase = phases[index]
    if phase["target_type"] == "percentage" and phase["percentage"] is not None:
        target = f"{phase['percentage']:g}%"
    elif phase["pilot_merchants"]:
        target = "pilot " + ", ".join(map(str, phase["pilot_merchants"][:3]))
    else:
        target = str(phase["name"])
    return f"phase {index + 1}/{len(phases)} ({target})"


def _release_facts(release_id: str) -> dict[str, Any]:
    """Return the release's name and the phases of its first member (every
    member has the release's plan)."""
    try:
        release_model = apps.get_model("canary", "Release")
    except LookupError:
        return {}
    name = (
        release_model.objects.filter(pk=release_id).values_list("name", flat=True)
    ).first()
    if name is None:
        return {}
    first = (
        apps.get_model("canary", "Rollout")
        .objects.filter(release_id=release_id)
        .order_by("pk")
        .values_list("pk", flat=True)
        .first()
    )
    return {"name": name, "phases": _phases_of(first)}


def _names(items: Any) -> str:
    keys = [str(item) for item in items or []]
    return ", ".join(keys) if keys else "none"


def _release_line(kind: str, event: AuditEvent, facts: dict) -> str:
    details = event.details or {}
    head = f"release {event.target_id} '{facts.get('name') or event.target_repr}'"
    where = _phase_text(facts.get("phases", []), details.get("phase"))
    at = f" at {where}" if where else ""
    reason = str(
        (details.get("attribution") or {}).get("reason") or details.get("reason") or ""
    ).strip()
    if kind == Kind.RELEASE_STARTED:
        return f"{head} started: {_names(details.get('members'))}"
    if kind == Kind.RELEASE_PARTIALLY_ROLLED_BACK:
        line = (
            f"{head}: {_names(details.get('rolled_back'))} rolled back alone{at}; "
            f"continuing: {_names(details.get('continuing'))}"
        )
    elif (
        kind == Kind.RELEASE_ROLLED_BACK and event.action == "release.rollback_started"
    ):
        line = f"{head} rolling back every feature{at}"
    elif kind == Kind.RELEASE_ROLLED_BACK:
        line = f"{head} rolled back"
    elif kind == Kind.RELEASE_COMPLETED:  # its event carries no reason
        return (
            f"{head} completed: deployed {_names(details.get('features_deployed'))}"
            f"; rolled back {_names(details.get('features_rolled_back'))}"
        )
    else:
        line = f"{head} aborted"
    return f"{line}: {reason}" if reason else line


def _link(event: AuditEvent) -> str:
    site = (notify_setting("SITE_URL") or "").rstrip("/")
    if not site:
        return ""
    app_label, _, model = event.target_type.partition(".")
    try:
        path = reverse(f"admin:{app_label}_{model}_change", args=[event.target_id])
    except NoReverseMatch:
        path = reverse("admin:audit_auditevent_change", args=[event.pk])
    return site + path


def _rollout_line(kind: str, event: AuditEvent, facts: dict, phase: Any) -> str:
    details = event.details or {}
    name = facts.get("name") or event.target_repr
    head = f"rollout {event.target_id} '{name}'"
    where = _phase_text(facts.get("phases", []), phase)
    reason = str(details.get("reason") or "").strip()
    at = f" at {where}" if where else ""
    lines = {
        Kind.ROLLOUT_STARTED: f"{head} started: {where or 'first phase'}",
        Kind.ROLLOUT_ADVANCED: f"{head} advanced to {where or 'the next phase'}",
        Kind.ROLLOUT_AWAITING_APPROVAL: f"{head} waits for approval{at}",
        Kind.ROLLOUT_PAUSED: f"{head} paused{at}",
        Kind.ROLLOUT_COMPLETED: f"{head} completed",
        Kind.ROLLOUT_ABORTED: f"{head} aborted{at}",
        Kind.ROLLOUT_ROLLBACK_FAILED: f"{head} rollback FAILED",
        Kind.ROLLOUT_ESCALATED: (
            f"{head} rollback escalated to level {details.get('level')}"
        ),
    }
    if kind == Kind.ROLLOUT_ROLLED_BACK:
        verb = "rolled back" if details.get("to") == "rolled_back" else "rolling back"
        line = f"{head} {verb}{at}"
    else:
        line = lines[kind]
    if kind == Kind.ROLLOUT_STARTED:
        return line  # its reason only says "started"
    return f"{line}: {reason}" if reason else line


def notice_for(event: AuditEvent) -> Notice | None:
    """Return what ``event`` notifies, or None when it notifies nothing."""
    details = event.details or {}
    kind = kind_of(event.action, details)
    if kind is None:
        return None
    body: dict[str, Any] = {
        "kind": kind,
        "environment": event.environment,
        "actor": event.actor_name,
        "audit_event_id": event.pk,
        "time": event.created_at.isoformat(),
        "reason": details.get("reason") or "",
    }
    if event.target_type.startswith("canary.rollout"):
        facts = _rollout_facts(event.target_id)
        phase = details.get("phase")
        if event.action == "rollout.phase_advanced":
            phase = (event.after or {}).get("phase")
        line = _rollout_line(kind, event, facts, phase)
        phases = facts.get("phases", [])
        body.update(
            flag=facts.get("flag", ""),
            rollout_id=int(event.target_id),
            rollout=facts.get("name", event.target_repr),
            phase=phase + 1 if isinstance(phase, int) else None,
            phases=len(phases) or None,
            status=details.get("to") or details.get("status"),
        )
        if kind == Kind.ROLLOUT_ESCALATED:
            body["level"] = details.get("level")
    elif event.target_type == "canary.release":
        facts = _release_facts(event.target_id)
        line = _release_line(kind, event, facts)
        details_phase = details.get("phase")
        body.update(
            release_id=int(event.target_id),
            release=facts.get("name", event.target_repr),
            phase=details_phase + 1 if isinstance(details_phase, int) else None,
            phases=len(facts.get("phases", [])) or None,
            features_deployed=details.get("features_deployed"),
            features_rolled_back=details.get(
                "features_rolled_back", details.get("rolled_back")
            ),
            continuing=details.get("continuing"),
            reason=body["reason"]
            or (details.get("attribution") or {}).get("reason")
            or "",
        )
    else:
        flag = event.target_repr.split("@", 1)[0]
        verb = "killed" if kind == Kind.FLAG_KILLED else "restored"
        line = f"flag {flag} {verb} in {event.environment}"
        reason = body["reason"]
        line = f"{line}: {reason}" if reason else line
        body.update(flag=flag)
    line = f"[{event.environment}] {line}" if event.environment else line
    link = _link(event)
    body["message"] = line
    body["link"] = link or None
    if link:
        line = f"{line} {link}"
    return Notice(
        kind=kind,
        message=line[:1000],
        body=json.dumps(body, sort_keys=True, separators=(",", ":")),
    )


def sample_notice(*, destination_name: str, environment: str, actor: str) -> Notice:
    """Return the notice of the admin's "send test notification" action."""
    line = f"[{environment}] test notification to {destination_name!r} by {actor}"
    body = {
        "kind": "test",
        "environment": environment,
        "actor": actor,
        "message": line,
    }
    return Notice(
        kind="test",
        message=line,
        body=json.dumps(body, sort_keys=True, separators=(",", ":")),
    )
