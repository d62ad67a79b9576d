"""Write and verify audit events.

``record_audit_event`` is the only writer. Services call it inside the
transaction of the change, so the change and its event commit together.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.db import connection, models, transaction
from django.utils import timezone

from controlplane.audit.actors import Actor, as_actor
from controlplane.audit.context import current_request_id
from controlplane.audit.models import AuditEvent
from controlplane.audit.signals import audit_recorded

if TYPE_CHECKING:
    from controlplane.audit.checkpoints import Checkpoint

GENESIS_HASH = "0" * 64
# Any constant works; it only has to be the same in every process.
_CHAIN_LOCK_KEY = 7_412_990_001


def _json_default(value: Any) -> Any:
    if isinstance(value, (dt.datetime, dt.date, dt.time)):
        return value.isoformat()
    if isinstance(value, (decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot record {type(value).__name__} in the audit log")


def normalize(value: Any) -> Any:
    """Return ``value`` as it will read back from a JSON column."""
    if value is None:
        return None
    return json.loads(json.dumps(value, default=_json_default))


def _canonical_time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _content(event: AuditEvent) -> dict[str, Any]:
    return {
        "created_at": _canonical_time(event.created_at),
        "actor_type": event.actor_type,
        "actor_id": event.actor_id,
        "actor_name": event.actor_name,
        "action": event.action,
        "target_type": event.target_type,
        "target_id": event.target_id,
        "target_repr": event.target_repr,
        "environment": event.environment,
        "before": event.before,
        "after": event.after,
        "details": event.details,
        "request_id": event.request_id,
    }


def canonical_text(event: AuditEvent) -> str:
    """Return the JSON text that is stored and hashed for ``event``."""
    return json.dumps(
        _content(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def _chain_hash(prev_hash: str, text: str) -> str:
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


def compute_hash(event: AuditEvent) -> str:
    """Return the SHA-256 of ``event``'s columns chained to its prev_hash.

    This is how an event without ``canonical`` (written before that column
    existed) is verified; for every other event the hash is over the stored
    ``canonical`` text, and both give the same digest when the columns read
    back exactly as they were written.
    """
    return _chain_hash(event.prev_hash, canonical_text(event))


def _comparable(value: Any) -> Any:
    """Return ``value`` with every number as its exact decimal value.

    A JSON column may give back ``1e16`` as the integer 10000000000000000,
    ``-0.0`` as ``0.0`` or a large float as its full decimal expansion: the
    same number, other bytes. Booleans stay booleans (True is not 1 here).
    """
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, float):
        return ("number", decimal.Decimal(repr(value)))
    if isinstance(value, int | decimal.Decimal):
        return ("number", decimal.Decimal(value))
    if isinstance(value, dict):
        return {key: _comparable(child) for key, child in value.items()}
    if isinstance(value, list):
        return [_comparable(child) for child in value]
    return ("other", repr(value))


def _columns_match(event: AuditEvent) -> bool:
    """Return whether ``event``'s columns say what its ``canonical`` says."""
    if canonical_text(event) == event.canonical:
        return True  # the common case: the columns read back byte for byte
    try:
        hashed = json.loads(event.canonical or "", parse_float=decimal.Decimal)
    except ValueError:
        return False
    return _comparable(hashed) == _comparable(_content(event))


def _describe_target(target: Any) -> tuple[str, str, str]:
    if isinstance(target, models.Model):
        return target._meta.label_lower, str(target.pk), str(target)[:255]
    if isinstance(target, tuple) and len(target) in (2, 3):
        target_type, target_id = str(target[0]), str(target[1])
        target_repr = str(target[2]) if len(target) == 3 else target_id
        return target_type, target_id, target_repr[:255]
    raise TypeError("target must be a model instance or (type, id[, repr])")


def audit_chain_lock() -> None:
    """Serialize chain appends so every event links to the one before it.

    PostgreSQL: a transaction-scoped advisory lock, released at commit (taking
    it again in the same transaction is free). SQLite: transactions start
    IMMEDIATE (settings), so writers are serialized already.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_CHAIN_LOCK_KEY])


@contextmanager
def audited_transaction() -> Iterator[None]:
    """Open ``transaction.atomic()`` and take the audit-chain lock first.

    Every audited write needs the chain lock before it commits. Taking it
    before any row lock gives all audited writes one lock order (chain, then
    rows), so two services can never deadlock by locking a row and the chain
    in opposite orders. Services use this instead of a bare atomic block.
    """
    with transaction.atomic():
        audit_chain_lock()
        yield


def record_audit_event(
    *,
    actor: Any,
    action: str,
    target: Any,
    environment: str = "",
    before: Any = None,
    after: Any = None,
    details: dict | None = None,
) -> AuditEvent:
    """Append one event to the chain, inside the caller's transaction.

    Must be called inside ``transaction.atomic()``: the event commits or rolls
    back with the change it describes.
    """
    if not connection.in_atomic_block:
        raise RuntimeError(
            "record_audit_event must run inside the change's transaction"
        )
    who: Actor = as_actor(actor)
    target_type, target_id, target_repr = _describe_target(target)
    audit_chain_lock()
    last = AuditEvent.objects.order_by("-id").values_list("hash", flat=True).first()
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
        before=normalize(before),
        after=normalize(after),
        details=normalize(details or {}),
        request_id=current_request_id(),
        prev_hash=last or GENESIS_HASH,
    )
    # The text is hashed and stored as is, so verification reads back
    # exactly the bytes that were hashed, whatever the JSON columns return.
    event.canonical = canonical_text(event)
    event.hash = _chain_hash(event.prev_hash, event.canonical)
    event.save(force_insert=True)
    audit_recorded.send(sender=AuditEvent, event=event)
    return event


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    broken_id: int | None = None
    problem: str = ""
    anchors_matched: int = 0


def _event_intact(event: AuditEvent) -> bool:
    if event.canonical is None:
        return compute_hash(event) == event.hash
    return _chain_hash(
        event.prev_hash, event.canonical
    ) == event.hash and _columns_match(event)


def _missing_anchor_report(
    anchors: Sequence[Checkpoint], seen: set[int], last_id: int | None, checked: int
) -> ChainReport | None:
    missing = sorted(
        (anchor for anchor in anchors if anchor.id not in seen), key=lambda a: a.id
    )
    if not missing:
        return None
    anchor = missing[0]
    if last_id is None or anchor.id > last_id:
        ends = f"the chain ends at event {last_id}" if last_id else "the chain is empty"
        problem = (
            f"missing, though the checkpoint of {anchor.checkpointed_at} anchored "
            f"it ({ends}): events were removed from the end"
        )
    else:
        problem = (
            f"missing, though the checkpoint of {anchor.checkpointed_at} anchored "
            "it: events were removed and the chain relinked"
        )
    return ChainReport(False, checked, anchor.id, problem)


def audit_chain_verify(
    *, chunk_size: int = 2000, anchors: Sequence[Checkpoint] = ()
) -> ChainReport:
    """Walk the whole chain in order; report the first event that breaks it.

    An event with ``canonical`` is checked by hashing that stored text (so a
    JSON column that does not round-trip a number cannot break the chain)
    and by comparing its columns with it, numbers by exact value (so an edit
    of a column is still found). An event written before ``canonical``
    existed is checked the old way, by hashing its columns.

    Old events are not back-filled: a data migration would have to UPDATE
    rows of an append-only table (past its trigger), and for an old event
    whose columns no longer read back as hashed the original bytes are gone
    anyway. Blanking ``canonical`` of a new event gains an attacker nothing:
    its columns must then hash to the same digest.

    ``anchors`` (checkpoints, see ``controlplane.audit.checkpoints``) must
    each be found with the same hash: a missing anchored event means events
    were cut (from the end, where the chain alone cannot tell), a different
    hash means the chain was rewritten with recomputed hashes. As the chain
    verifies from the genesis up to each anchor, nothing before it changed.
    """
    by_id: dict[int, list[Checkpoint]] = {}
    for anchor in anchors:
        by_id.setdefault(anchor.id, []).append(anchor)
    seen: set[int] = set()
    expected_prev = GENESIS_HASH
    checked = 0
    last_id: int | None = None
    for event in AuditEvent.objects.order_by("id").iterator(chunk_size=chunk_size):
        if event.prev_hash != expected_prev:
            return ChainReport(
                False,
                checked,
                event.pk,
                "prev_hash does not match the event before it "
                "(an event was removed or reordered)",
            )
        if not _event_intact(event):
            return ChainReport(
                False, checked, event.pk, "content does not match its hash (edited)"
            )
        for anchor in by_id.get(event.pk, ()):
            if anchor.hash != event.hash:
                return ChainReport(
                    False,
                    checked,
                    event.pk,
                    f"hash differs from the checkpoint of {anchor.checkpointed_at} "
                    "(the chain was rewritten up to here)",
                )
        if event.pk in by_id:
            seen.add(event.pk)
        expected_prev = event.hash
        last_id = event.pk
        checked += 1
    missing = _missing_anchor_report(anchors, seen, last_id, checked)
    if missing is not None:
        return missing
    return ChainReport(True, checked, anchors_matched=len(anchors))


def audit_event_as_dict(event: AuditEvent) -> dict[str, Any]:
    """Return an event as a plain dict (export, API)."""
    return {
        "id": event.pk,
        "created_at": _canonical_time(event.created_at),
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
    "audit_chain_lock",
    "audited_transaction",
    "ChainReport",
    "audit_chain_verify",
    "audit_event_as_dict",
    "audit_events_export",
    "canonical_text",
    "compute_hash",
    "history_for",
    "normalize",
    "record_audit_event",
]
