"""Alert triggers: secret URLs that kill (or restore) one flag state.

A trigger belongs to one flag in one environment. Its secret is shown once
at creation and stored as a SHA-256 (like API keys); a call presents the
trigger id and the secret in its URL. ``alert_trigger_fire`` runs the
existing kill and restore services with the trigger as the actor and, in the
same transaction, records ``alert_trigger.fired`` with the alert's labels.
A call that changes nothing (a kill of a killed flag, a resolved alert the
trigger may not act on) writes nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from controlplane.audit.actors import as_actor
from controlplane.audit.services import (
    audited_transaction,
    environment_chain,
    record_audit_event,
)
from controlplane.exceptions import Conflict, DomainError, InvalidInput, NotFound
from flags.models import AlertTrigger, Environment, Flag, FlagState
from flags.services.states import flag_state_kill, flag_state_restore
from flags.triggers import KILL, TriggerCall

SECRET_PREFIX = "cp_trg_"
PREFIX_LENGTH = 12  # "cp_trg_" + 5 characters of the secret
URL_TEMPLATE = "/api/v1/triggers/{id}/{secret}/"
# Compared against when the id is unknown, so that answer takes as long.
_ABSENT_HASH = hashlib.sha256(b"no such trigger").hexdigest()


class TriggerRevoked(DomainError):
    """A revoked trigger was called with its right secret (410)."""

    code = "revoked"
    http_status = 410


@dataclass(frozen=True, slots=True)
class FireResult:
    """What a call did: ``result`` is one of RESULTS."""

    trigger: AlertTrigger
    action: str  # kill | restore
    result: str
    state: FlagState


RESULTS = ("killed", "already_killed", "restored", "not_killed", "ignored")


def secret_hash(raw: str) -> str:
    """Return the SHA-256 hex digest of a raw trigger secret."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def trigger_url(trigger: AlertTrigger, raw: str) -> str:
    """Return the path a monitoring system posts to (the secret included)."""
    return URL_TEMPLATE.format(id=trigger.pk, secret=raw)


def _snapshot(trigger: AlertTrigger) -> dict[str, Any]:
    return {
        "name": trigger.name,
        "flag": trigger.flag.key,
        "environment": trigger.environment.key,
        "can_restore": trigger.can_restore,
        "prefix": trigger.prefix,
        "revoked_at": trigger.revoked_at,
    }


def alert_trigger_create(
    *,
    actor: Any,
    flag: Flag,
    environment: Environment,
    name: str,
    can_restore: bool = False,
) -> tuple[AlertTrigger, str]:
    """Create a trigger; return it and the raw secret (shown once).

    Raises InvalidInput for a missing or long name.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("name: is required (at most 100 characters)", field="name")
    if not isinstance(can_restore, bool):
        raise InvalidInput("can_restore: must be true or false", field="can_restore")
    actor = as_actor(actor)
    raw = SECRET_PREFIX + secrets.token_urlsafe(32)
    with audited_transaction(chains=[environment_chain(environment.key)]):
        trigger = AlertTrigger.objects.create(
            flag=flag,
            environment=environment,
            name=name,
            can_restore=can_restore,
            prefix=raw[:PREFIX_LENGTH],
            secret_hash=secret_hash(raw),
            created_by=str(actor),
        )
        record_audit_event(
            actor=actor,
            action="alert_trigger.created",
            target=trigger,
            environment=environment.key,
            after=_snapshot(trigger),
        )
    return trigger, raw


def alert_trigger_revoke(*, actor: Any, trigger: AlertTrigger) -> AlertTrigger:
    """Revoke a trigger: its URL answers 410 from now on.

    Raises Conflict when it is already revoked.
    """
    with audited_transaction(chains=[environment_chain(trigger.environment.key)]):
        trigger = (
            AlertTrigger.objects.select_for_update(of=("self",))
            .select_related("flag", "environment")
            .get(pk=trigger.pk)
        )
        if trigger.revoked_at is not None:
            raise Conflict(f"trigger {trigger.name!r} is already revoked")
        before = _snapshot(trigger)
        trigger.revoked_at = timezone.now()
        trigger.save(update_fields=["revoked_at"])
        record_audit_event(
            actor=actor,
            action="alert_trigger.revoked",
            target=trigger,
            environment=trigger.environment.key,
            before=before,
            after=_snapshot(trigger),
        )
    return trigger


def alert_trigger_authenticate(*, trigger_id: str, secret: str) -> AlertTrigger:
    """Return the trigger ``trigger_id`` whose secret is ``secret``.

    Raises NotFound for an unknown id or a wrong secret alike (the hashes
    are compared in constant time, and an unknown id is compared too), and
    TriggerRevoked for a revoked trigger called with its right secret.
    """
    trigger = None
    if trigger_id.isdigit() and len(trigger_id) < 19:
        trigger = (
            AlertTrigger.objects.select_related("flag", "environment")
            .filter(pk=int(trigger_id))
            .first()
        )
    expected = trigger.secret_hash if trigger is not None else _ABSENT_HASH
    matches = hmac.compare_digest(secret_hash(secret), expected)
    if trigger is None or not matches:
        raise NotFound("no such trigger", field="trigger")
    if trigger.revoked_at is not None:
        raise TriggerRevoked(f"trigger {trigger.name!r} is revoked", field="trigger")
    return trigger


def alert_trigger_fire(*, trigger: AlertTrigger, call: TriggerCall) -> FireResult:
    """Kill or restore the trigger's flag state as ``call`` asks. Idempotent.

    A kill of a killed state changes nothing. A restore happens only when
    the trigger may restore (``can_restore``) and the state's kill is the
    one this trigger made; otherwise nothing changes (``ignored`` /
    ``not_killed``). A change is audited twice in one transaction: the
    state's own event (its actor is the trigger) and ``alert_trigger.fired``
    with the alert's labels.
    """
    actor = trigger.as_actor()
    reason = call.reason(trigger.name)
    environment = trigger.environment
    with audited_transaction(chains=[environment_chain(environment.key)]):
        trigger = (
            AlertTrigger.objects.select_for_update(of=("self",))
            .select_related("flag", "environment")
            .get(pk=trigger.pk)
        )
        if trigger.revoked_at is not None:  # revoked since it was read
            raise TriggerRevoked(
                f"trigger {trigger.name!r} is revoked", field="trigger"
            )
        state = FlagState.objects.get(
            flag_id=trigger.flag_id, environment_id=trigger.environment_id
        )
        before = state.version
        if call.action == KILL:
            state = flag_state_kill(
                actor=actor,
                flag=trigger.flag,
                environment=environment,
                reason=reason,
            )
            result = "killed" if state.version != before else "already_killed"
            if result == "killed":
                trigger.last_kill_at = state.killed_at
        elif not trigger.can_restore:
            result = "ignored"
        elif state.killed_at is None or state.killed_at != trigger.last_kill_at:
            result = "not_killed"  # not killed, or killed by someone else
        else:
            state = flag_state_restore(
                actor=actor,
                flag=trigger.flag,
                environment=environment,
                reason=reason,
            )
            result = "restored"
            trigger.last_kill_at = None
        if result in ("killed", "restored"):
            trigger.save(update_fields=["last_kill_at"])
            record_audit_event(
                actor=actor,
                action="alert_trigger.fired",
                target=trigger,
                environment=environment.key,
                details={
                    **call.audit_details(),
                    "result": result,
                    "reason": reason,
                    "state_version": state.version,
                },
            )
    return FireResult(trigger=trigger, action=call.action, result=result, state=state)


def alert_trigger_list(
    *,
    flag: Flag | None = None,
    environment: Environment | None = None,
    include_revoked: bool = False,
):
    """Return triggers, optionally of one flag and/or environment."""
    triggers = AlertTrigger.objects.select_related("flag", "environment")
    if flag is not None:
        triggers = triggers.filter(flag=flag)
    if environment is not None:
        triggers = triggers.filter(environment=environment)
    if not include_revoked:
        triggers = triggers.filter(revoked_at__isnull=True)
    return triggers


def alert_trigger_get(trigger_id: str) -> AlertTrigger:
    """Return the trigger with id ``trigger_id`` or raise NotFound."""
    trigger = None
    if trigger_id.isdigit() and len(trigger_id) < 19:
        trigger = (
            AlertTrigger.objects.select_related("flag", "environment")
            .filter(pk=int(trigger_id))
            .first()
        )
    if trigger is None:
        raise NotFound(f"unknown trigger {trigger_id!r}", field="id")
    return trigger
