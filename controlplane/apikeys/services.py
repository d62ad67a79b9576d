"""Create and revoke API keys; both audited, the secret never recorded."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.utils import timezone

from controlplane.apikeys.models import ApiKey, Scope
from controlplane.audit.actors import as_actor
from controlplane.audit.services import audited_transaction, record_audit_event
from controlplane.exceptions import Conflict, InvalidInput

PREFIXES = {Scope.SERVER: "cp_srv_", Scope.MANAGEMENT: "cp_mgt_"}
PREFIX_LENGTH = 12  # "cp_srv_" + 5 characters of the secret


def key_hash(raw: str) -> str:
    """Return the SHA-256 hex digest of a raw key."""
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()


def _snapshot(api_key: ApiKey) -> dict[str, Any]:
    return {
        "name": api_key.name,
        "scope": api_key.scope,
        "environment": api_key.environment.key if api_key.environment_id else None,
        "user": api_key.user.get_username() if api_key.user_id else None,
        "prefix": api_key.prefix,
        "revoked_at": api_key.revoked_at,
    }


def apikey_create(
    *, actor: Any, name: str, scope: str, environment: Any = None, user: Any = None
) -> tuple[ApiKey, str]:
    """Create a key; return it and the raw secret (shown once, stored hashed).

    A server key needs an environment; a management key needs a service user
    and no environment. Raises InvalidInput otherwise.
    """
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput("name: is required (at most 100 characters)", field="name")
    if scope not in Scope.values:
        raise InvalidInput(
            f"scope: must be one of {', '.join(Scope.values)}", field="scope"
        )
    if scope == Scope.SERVER and environment is None:
        raise InvalidInput(
            "environment: a server key belongs to one environment", field="environment"
        )
    if scope == Scope.MANAGEMENT:
        if environment is not None:
            raise InvalidInput(
                "environment: a management key has no environment", field="environment"
            )
        if user is None:
            raise InvalidInput(
                "user: a management key carries a service user's permissions",
                field="user",
            )
    actor = as_actor(actor)
    raw = PREFIXES[Scope(scope)] + secrets.token_urlsafe(32)
    with audited_transaction():
        api_key = ApiKey.objects.create(
            name=name,
            scope=scope,
            environment=environment,
            user=user,
            prefix=raw[:PREFIX_LENGTH],
            secret_hash=key_hash(raw),
            created_by=str(actor),
        )
        record_audit_event(
            actor=actor,
            action="apikey.created",
            target=api_key,
            environment=environment.key if environment is not None else "",
            after=_snapshot(api_key),
        )
    return api_key, raw


def apikey_revoke(*, actor: Any, api_key: ApiKey) -> ApiKey:
    """Revoke a key; serving processes refuse it within the cache TTL.

    Raises Conflict when the key is already revoked.
    """
    with audited_transaction():
        api_key = (
            ApiKey.objects.select_for_update(of=("self",))
            .select_related("environment", "user")
            .get(pk=api_key.pk)
        )
        if api_key.revoked_at is not None:
            raise Conflict(f"API key {api_key.name!r} is already revoked")
        before = _snapshot(api_key)
        api_key.revoked_at = timezone.now()
        api_key.save(update_fields=["revoked_at"])
        record_audit_event(
            actor=actor,
            action="apikey.revoked",
            target=api_key,
            environment=api_key.environment.key if api_key.environment_id else "",
            before=before,
            after=_snapshot(api_key),
        )
    return api_key


def apikeys_touch(used: dict[int, Any]) -> None:
    """Record last-used times in one statement per key (no audit: not a change).

    Called off the request path by the key cache's flush, at most once per
    minute per key.
    """
    for pk, when in used.items():
        ApiKey.objects.filter(pk=pk).update(last_used_at=when)
