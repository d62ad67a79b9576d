"""What an audit event hashes to: its canonical text and the chained digest.

``record_audit_event`` (services) writes with these, and the verification
(``controlplane.audit.verify``) reads with the same, so both sides agree on
every byte.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import json
import uuid
from typing import Any

from controlplane.audit.models import AuditEvent

GENESIS_HASH = "0" * 64


def json_default(value: Any) -> Any:
    """Encode the non-JSON values events may carry (times, decimals, sets)."""
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
    return json.loads(json.dumps(value, default=json_default))


def canonical_time(value: dt.datetime) -> str:
    """Return ``value`` as the UTC text events and checkpoints carry."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def event_content(event: AuditEvent) -> dict[str, Any]:
    """Return what is hashed for ``event``.

    An event with a chain position (``chain_seq``) also hashes its chain and
    position, so moving it to another chain or place breaks its hash. Events
    written before chains existed have no position and hash without them.
    """
    content = {
        "created_at": canonical_time(event.created_at),
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
    if event.chain_seq is not None:
        content["chain"] = event.chain
        content["seq"] = event.chain_seq
    return content


def canonical_text(event: AuditEvent) -> str:
    """Return the JSON text that is stored and hashed for ``event``."""
    return json.dumps(
        event_content(event), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def chain_hash(prev_hash: str, text: str) -> str:
    """Return SHA-256 over ``prev_hash`` followed by ``text``."""
    return hashlib.sha256((prev_hash + text).encode("utf-8")).hexdigest()


def compute_hash(event: AuditEvent) -> str:
    """Return the SHA-256 of ``event``'s columns chained to its prev_hash.

    This is how an event without ``canonical`` (written before that column
    existed) is verified; for every other event the hash is over the stored
    ``canonical`` text, and both give the same digest when the columns read
    back exactly as they were written.
    """
    return chain_hash(event.prev_hash, canonical_text(event))


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


def columns_match(event: AuditEvent) -> bool:
    """Return whether ``event``'s columns say what its ``canonical`` says."""
    if canonical_text(event) == event.canonical:
        return True  # the common case: the columns read back byte for byte
    try:
        hashed = json.loads(event.canonical or "", parse_float=decimal.Decimal)
    except ValueError:
        return False
    return _comparable(hashed) == _comparable(event_content(event))


def event_intact(event: AuditEvent) -> bool:
    """Return whether ``event``'s hash still covers what it says."""
    if event.canonical is None:
        return compute_hash(event) == event.hash
    return chain_hash(event.prev_hash, event.canonical) == event.hash and (
        columns_match(event)
    )
