"""The gate: apply a change now, or turn it into a change request.

Interfaces (API views, commands, admin actions) that change flag states,
overrides, kills or rollout starts call ``submit``. When the environment's
approval policy asks for approvals for that kind of change, a pending
change request is created instead and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.urls import reverse
from django.utils.html import format_html
from django.utils.safestring import SafeString

from controlplane.exceptions import Conflict
from flags import selectors
from flags.changes.models import ChangeRequest
from flags.changes.operations import ROLLOUT_START, operation_get
from flags.changes.services._common import approvals_required
from flags.changes.services.requests import change_request_create


@dataclass(frozen=True, slots=True)
class Submission:
    """What ``submit`` did: applied (``result``) or sent for approval."""

    result: Any = None
    change_request: ChangeRequest | None = None

    @property
    def is_pending(self) -> bool:
        return self.change_request is not None


def _environment(operation: Any, arguments: dict) -> Any:
    if operation.kind == ROLLOUT_START:
        from flags.changes.rollouts import target_get

        return target_get(operation.name, arguments).environment
    return selectors.environment_get(str(arguments.get("environment", "")))


def needs_approval(*, operation: str, arguments: dict) -> int:
    """Return how many approvals this change needs (0: it applies now)."""
    op = operation_get(operation)
    return approvals_required(op, _environment(op, arguments))


def submit(
    *,
    actor: Any,
    operation: str,
    arguments: dict,
    expected_version: int | None = None,
    reason: str = "",
    apply: Callable[[], Any] | None = None,
) -> Submission:
    """Apply the change now, or create a change request when policy says so.

    ``apply`` is the caller's own call of the same service (it keeps its
    objects and options); without it the operation applies itself from
    ``arguments``. Raise what the service or ``change_request_create``
    raises.
    """
    op = operation_get(operation)
    if approvals_required(op, _environment(op, arguments)) == 0:
        if apply is not None:
            return Submission(result=apply())
        return Submission(
            result=op.apply(
                actor=actor,
                arguments=op.validate(arguments),
                expected_version=expected_version,
            )
        )
    return Submission(
        change_request=change_request_create(
            actor=actor,
            operation=op.name,
            arguments=arguments,
            expected_version=expected_version,
            reason=reason,
        )
    )


def pending_message(change: ChangeRequest) -> str:
    """Return the one line an interface shows when a change waits for approval."""
    return (
        f"change request {change.pk} created: {change.environment.key} needs "
        f"{change.required_approvals} approval(s) by someone else before "
        f"{change.operation} of {change.target} applies"
    )


def pending_message_html(change: ChangeRequest) -> SafeString:
    """Return ``pending_message`` for an admin page, linked to the request."""
    line = pending_message(change)
    return format_html(
        '{} (<a href="{}">review change request {}</a>)',
        line[:1].upper() + line[1:],
        reverse("admin:changes_changerequest_change", args=[change.pk]),
        change.pk,
    )


def state_arguments(*, flag: str, environment: str, **fields: Any) -> dict:
    """Return the JSON arguments of a change to ``flag`` in ``environment``.

    Interfaces pass what their input held; None values (options not given)
    and ``version`` (passed separately) are dropped, times become ISO text.
    """
    arguments: dict[str, Any] = {"flag": flag, "environment": environment}
    for name, value in fields.items():
        if value is None or name == "version":
            continue
        arguments[name] = value.isoformat() if hasattr(value, "isoformat") else value
    return arguments


def refuse_if_gated(*, operation: str, environment: str) -> None:
    """Raise Conflict when ``operation`` needs approval in ``environment``.

    For interfaces that cannot hand back a change request instead of the
    saved row (the admin's edit forms): the change is refused with a
    pointer to the change-request page rather than applied unreviewed.
    """
    needed = needs_approval(operation=operation, arguments={"environment": environment})
    if needed:
        raise Conflict(
            f"{environment} requires {needed} approval(s) for this change: "
            "request it under Change management → Change requests"
        )
