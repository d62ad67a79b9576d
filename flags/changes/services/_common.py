"""Helpers shared by the change-request and scheduled-change services."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from django.db import transaction

from controlplane.audit.actors import Actor, as_actor
from controlplane.exceptions import DomainError, VersionConflict
from flags.changes.models import ApprovalPolicy, AuthoredChange
from flags.changes.operations import (
    Operation,
    environment_of,
    observed,
    stale_fields,
)
from flags.models import Environment


def identity_of(actor: Any) -> str:
    """Return who ``actor`` is for the four-eyes rule.

    A person is the same whether acting in the admin, the API or at the
    command line (their user name); a management API key counts as the
    user it acts for, so nobody approves their own change with a key.
    """
    who: Actor = as_actor(actor)
    if who.type == "api_key":
        from controlplane.apikeys.models import ApiKey

        username = (
            ApiKey.objects.filter(pk=who.id)
            .values_list("user__username", flat=True)
            .first()
        )
        if username:
            return f"user:{username}"
    if who.type == "user":
        return f"user:{who.name}"
    return f"{who.type}:{who.id}"


def approvals_required(operation: Operation, environment: Environment) -> int:
    """Return how many approvals ``operation`` needs in ``environment`` (0: none)."""
    policy = ApprovalPolicy.objects.filter(environment=environment).first()
    return 0 if policy is None else policy.approvals_for(operation.kind)


def author_fields(actor: Any) -> dict[str, str]:
    who: Actor = as_actor(actor)
    return {"author_type": who.type, "author_id": who.id, "author_name": who.name}


def based_on(
    operation: Operation, arguments: dict, expected_version: int | None
) -> tuple[Environment, int | None, dict]:
    """Return the environment, the state version and the values a change is based on.

    Raise VersionConflict when the caller named a version that is no
    longer current: a change is never based on a state nobody saw.
    """
    environment = environment_of(operation, arguments)
    version, values = observed(operation, arguments)
    if expected_version is not None and version is not None:
        if expected_version != version:
            raise VersionConflict(
                what=f"{arguments.get('flag')} in {environment.key}",
                expected=expected_version,
                current=version,
            )
    return environment, version, values


@dataclass(frozen=True, slots=True)
class Outcome:
    status: str  # applied | stale | failed
    message: str
    result: Any = None
    after: dict | None = None


def _describe(result: Any) -> str:
    version = getattr(result, "version", None)
    if version is not None and hasattr(result, "fallthrough"):
        return f"applied: state version {version}"
    status = getattr(result, "status", None)
    if status is not None:
        return f"applied: {result} is {status}"
    return "applied"


def apply_now(change: AuthoredChange, operation: Operation, expected: dict) -> Outcome:
    """Apply ``change`` in a savepoint of the caller's transaction.

    The caller holds the audit-chain locks and the change's row lock. The
    flag state is locked before the stale-version comparison, so nobody
    moves it between the comparison and the write. A refusal or a service
    error rolls back the savepoint only: the caller records it.
    """
    try:
        with transaction.atomic():
            changed, version = stale_fields(operation, change.arguments, expected)
            if changed:
                return Outcome(
                    "stale",
                    f"refused: {', '.join(changed)} changed since "
                    f"version {change.based_on_version} (now version {version}); "
                    "this change would overwrite that",
                )
            result = operation.apply(actor=change.author, arguments=change.arguments)
            _, after = observed(operation, change.arguments)
    except DomainError as exc:
        return Outcome("failed", f"failed: {exc.message}")
    except ObjectDoesNotExist as exc:
        return Outcome("failed", f"failed: {exc}")
    return Outcome("applied", _describe(result), result, after)


def apply_outside(change: AuthoredChange, operation: Operation) -> Outcome:
    """Apply a non-atomic change with no transaction open (a rollout start)."""
    try:
        result = operation.apply(actor=change.author, arguments=change.arguments)
    except DomainError as exc:
        return Outcome("failed", f"failed: {exc.message}")
    except ObjectDoesNotExist as exc:
        return Outcome("failed", f"failed: {exc}")
    return Outcome("applied", _describe(result), result, {})
