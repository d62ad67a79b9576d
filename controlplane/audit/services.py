"""Write and read audit events.

``record_audit_event`` is the only writer. Services call it inside the
transaction of the change, so the change and its event commit together.
Chains and their locks live in ``controlplane.audit.chains``, hashing in
``controlplane.audit.hashing``, verification in ``controlplane.audit.verify``;
their public names are importable from here too.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from typing import Any

from django.db import connection, models
from django.utils import timezone

from controlplane.audit.actors import Actor, as_actor
from controlplane.audit.chains import (
    GLOBAL_CHAIN,
    audit_chain_lock,
    audited_transaction,
    chain_for,
    ensure_chain_locked,
    environment_chain,
)
from controlplane.audit.context import current_request_id
from controlplane.audit.hashing import (
    GENESIS_HASH,
    canonical_text,
    canonical_time,
    chain_hash,
    compute_hash,
    json_default,
    normalize,
)
from controlplane.audit.models import AuditEvent
from controlplane.audit.signals import audit_recorded
from controlplane.audit.verify import (
    ChainReport,
    audit_chain_verify,
    audit_chains_verify,
)

# Older names, still imported by callers and tests.
_canonical_time = canonical_time
_chain_hash = chain_hash


def _describe_target(target: Any) -> tuple[str, str, str]:
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk), str(target)[:255]
    if isinstance(target, tuple) and len(target) in (2, 3):
        target_type, target_id = str(target[0]), str(target[1])
        target_repr = str(target[2]) if len(target) == 3 else target_id
        return target_type, target_id, target_repr[:255]
    raise TypeError("target must be a model instance or (type, id[, repr])")


_TABLE = AuditEvent._meta.db_table
# Every column but the id, in the order _insert passes them.
_COLUMNS = (
    "created_at",
    "actor_type",
    "actor_id",
    "actor_name",
    "action",
    "target_type",
    "target_id",
    "target_repr",
    "environment",
    "before",
    "after",
    "details",
    "request_id",
    "prev_hash",
    "hash",
    "canonical",
    "chain",
    "chain_seq",
)
_JSON_COLUMNS = frozenset({"before", "after", "details"})

# Appending is the hot part of every audited change, so its two statements
# are plain SQL: compiling them through the ORM cost more than running them.


def _chain_head(chain: str) -> tuple[str, int]:
    """Return (hash, position) of the last event of ``chain``; genesis is (.., 0).

    The caller holds the chain's lock, so nobody appends meanwhile. The
    ``global`` chain starts with the events older than the chains (no
    position), so its first positioned event links to the last of those.
    """
    table = connection.ops.quote_name(_TABLE)
    with connection.cursor() as cursor:
        # chain_seq IS NOT NULL: the partial unique index, read backwards
        cursor.execute(
            f"SELECT hash, chain_seq FROM {table} WHERE chain = %s "
            "AND chain_seq IS NOT NULL ORDER BY chain_seq DESC LIMIT 1",
            [chain],
        )
        head = cursor.fetchone()
        if head is not None:
            return head[0], head[1]
        if chain == GLOBAL_CHAIN:
            cursor.execute(
                f"SELECT hash FROM {table} WHERE chain_seq IS NULL "
                "ORDER BY id DESC LIMIT 1"
            )
            older = cursor.fetchone()
            if older is not None:
                return older[0], 0
    return GENESIS_HASH, 0


def _insert(event: AuditEvent, json_texts: dict[str, str | None]) -> None:
    """INSERT ``event`` (its JSON columns as ``json_texts``) and set its id."""
    ops = connection.ops
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    values: list[Any] = []
    for column in _COLUMNS:
        if column in _JSON_COLUMNS:
            values.append(json_texts[column])
        elif column == "created_at":
            values.append(ops.adapt_datetimefield_value(event.created_at))
        else:
            values.append(getattr(event, column))
    placeholders = ", ".join(
        f"%s{cast}" if column in _JSON_COLUMNS else "%s" for column in _COLUMNS
    )
    columns = ", ".join(ops.quote_name(column) for column in _COLUMNS)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {ops.quote_name(_TABLE)} ({columns}) "
            f"VALUES ({placeholders}) RETURNING id",
            values,
        )
        event.pk = cursor.fetchone()[0]
    event._state.adding = False
    event._state.db = connection.alias


def _as_json(value: Any) -> tuple[Any, str | None]:
    """Return ``value`` as it reads back from a JSON column, and its JSON text."""
    if value is None:
        return None, None
    text = json.dumps(value, default=json_default)
    return json.loads(text), text


def record_audit_event(
    *,
    actor: Any,
    action: str,
    target: Any,
    environment: str = "",
    before: Any = None,
    after: Any = None,
    details: dict | None = None,
    chain: str | None = None,
) -> AuditEvent:
    """Append one event to its chain, inside the caller's transaction.

    The event joins ``chain`` when given, else its environment's chain, else
    ``global`` (``controlplane.audit.chains``). Must be called inside
    ``transaction.atomic()``: the event commits or rolls back with the
    change it describes. Inside an ``audited_transaction`` that locked the
    chain, appending takes no further lock.
    """
    if not connection.in_atomic_block:
        raise RuntimeError(
            "record_audit_event must run inside the change's transaction"
        )
    who: Actor = as_actor(actor)
    target_type, target_id, target_repr = _describe_target(target)
    chain = chain or chain_for(environment=environment or "")
    json_values = {
        "before": _as_json(before),
        "after": _as_json(after),
        "details": _as_json(details or {}),
    }
    ensure_chain_locked(chain)
    prev_hash, position = _chain_head(chain)
    event = AuditEvent(
        created_at=timezone.now(),
        actor_type=who.type,
        actor_id=who.id,
        actor_name=who.name,
        action=action,
        target_type=target_type,
        target_id=target_id,
        target_repr=target_repr,
        environment=environment or "",
        before=json_values["before"][0],
        after=json_values["after"][0],
        details=json_values["details"][0],
        request_id=current_request_id(),
        prev_hash=prev_hash,
        chain=chain,
        chain_seq=position + 1,
    )
    # The text is hashed and stored as is, so verification reads back
    # exactly the bytes that were hashed, whatever the JSON columns return.
    event.canonical = canonical_text(event)
    event.hash = chain_hash(event.prev_hash, event.canonical)
    _insert(event, {name: text for name, (_, text) in json_values.items()})
    audit_recorded.send(sender=AuditEvent, event=event)
    return event


def audit_event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """Return an event as a plain dict (export, API)."""
    return {
        "id": event.pk,
        "created_at": canonical_time(event.created_at),
        "actor": {
            "type": event.actor_type,
            "id": event.actor_id,
            "name": event.actor_name,
        },
        "action": event.action,
        "target": {
            "type": event.target_type,
            "id": event.target_id,
            "repr": event.target_repr,
        },
        "environment": event.environment,
        "before": event.before,
        "after": event.after,
        "details": event.details,
        "request_id": event.request_id,
        "chain": event.chain,
        "seq": event.chain_seq,
        "prev_hash": event.prev_hash,
        "hash": event.hash,
    }


def audit_events_export(
    *, since: dt.datetime | None = None
) -> Iterator[dict[str, Any]]:
    """Yield events oldest first, optionally only those at or after ``since``."""
    events = AuditEvent.objects.order_by("id")
    if since is not None:
        events = events.filter(created_at__gte=since)
    for event in events.iterator(chunk_size=2000):
        yield audit_event_as_dict(event)


def history_for(*, target: Any, limit: int = 20):
    """Return the latest events about ``target``, newest first."""
    target_type, target_id, _ = _describe_target(target)
    return AuditEvent.objects.filter(target_type=target_type, target_id=target_id)[
        :limit
    ]


__all__ = [
    "GENESIS_HASH",
    "GLOBAL_CHAIN",
    "audit_chain_lock",
    "audited_transaction",
    "ChainReport",
    "audit_chain_verify",
    "audit_chains_verify",
    "audit_event_as_dict",
    "audit_events_export",
    "canonical_text",
    "compute_hash",
    "environment_chain",
    "history_for",
    "normalize",
    "record_audit_event",
]
