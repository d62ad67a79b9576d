"""Four-eyes change requests: create, approve, reject, cancel, apply.

A change request holds an operation that the environment's approval policy
says needs N approvals. It is applied exactly once, by the service layer,
when the last approval arrives: every step locks the request's row and
checks its status in the transaction that records the step's audit event.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils import timezone

from controlplane.audit.services import (
    audited_transaction,
    environment_chain,
    record_audit_event,
)
from controlplane.exceptions import (
    Conflict,
    Forbidden,
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from flags.changes.models import (
    ChangeRequest,
    Decision,
    Review,
)
from flags.changes.models import (
    ChangeRequestStatus as Status,
)
from flags.changes.operations import Operation, chains_of, operation_get
from flags.changes.services._common import (
    Outcome,
    apply_now,
    apply_outside,
    approvals_required,
    author_fields,
    based_on,
    identity_of,
)
from flags.changes.transitions import REQUEST_ALLOWED


def change_request_get(change_request_id: Any) -> ChangeRequest:
    """Return the change request ``change_request_id``; raise NotFound."""
    try:
        pk = int(str(change_request_id).strip())
    except ValueError:
        raise InvalidInput(
            f"change request: {change_request_id!r} is not an id", field="id"
        ) from None
    found = (
        ChangeRequest.objects.select_related("environment").filter(pk=pk).first()
        if 0 < pk < 2**63
        else None
    )
    if found is None:
        raise NotFound(f"unknown change request {change_request_id}", field="id")
    return found


def _lock(pk: int) -> ChangeRequest:
    # of=self: the environment row is the ruleset version others bump
    return (
        ChangeRequest.objects.select_for_update(of=("self",))
        .select_related("environment")
        .get(pk=pk)
    )


def _move(change: ChangeRequest, to: str) -> str:
    if to not in REQUEST_ALLOWED[change.status]:
        raise InvalidTransition(
            f"change request {change.pk} is {change.status}, it cannot become {to}",
            field="status",
        )
    before, change.status = change.status, to
    return before


def _audit(change: ChangeRequest, actor: Any, action: str, **details: Any) -> None:
    record_audit_event(
        actor=actor,
        action=f"change_request.{action}",
        target=change,
        environment=change.environment.key,
        after={"status": change.status},
        details={
            "operation": change.operation,
            "arguments": change.arguments,
            "based_on_version": change.based_on_version,
            **details,
        },
    )


def change_request_create(
    *,
    actor: Any,
    operation: str,
    arguments: Any,
    expected_version: int | None = None,
    reason: str = "",
) -> ChangeRequest:
    """Create a pending change request for ``operation``.

    It needs the approvals the environment's policy asks for this kind of
    change, and at least one. Raise InvalidInput for unknown operations or
    bad arguments, VersionConflict when ``expected_version`` is stale.
    """
    op = operation_get(operation)
    arguments = op.validate(arguments)
    environment, version, values = based_on(op, arguments, expected_version)
    change = ChangeRequest(
        environment=environment,
        operation=op.name,
        arguments=arguments,
        target=_target(op, arguments),
        based_on_version=version,
        based_on=values,
        required_approvals=max(1, approvals_required(op, environment)),
        reason=reason[:500],
        **author_fields(actor),
    )
    with audited_transaction(chains=[environment_chain(environment.key)]):
        # Under the environment's chain lock: two presses of the same
        # button cannot both pass this check.
        twin = next(
            (
                pk
                for pk, given in ChangeRequest.objects.filter(
                    environment=environment,
                    operation=op.name,
                    target=change.target,
                    status=Status.PENDING,
                ).values_list("pk", "arguments")
                if _asks(given) == _asks(arguments)
            ),
            None,
        )
        if twin is not None:
            raise Conflict(
                f"change request {twin} already asks for this change and is "
                "pending: review or cancel it",
                field="operation",
            )
        change.full_clean()
        change.save()
        _audit(change, actor, "created", required_approvals=change.required_approvals)
    return change


def _asks(arguments: Any) -> dict:
    """Return what a change asks for: its arguments but the reason."""
    return {k: v for k, v in dict(arguments or {}).items() if k != "reason"}


def _target(op: Operation, arguments: dict) -> str:
    from flags.changes.operations import target_of

    return target_of(op, arguments)[:200]


def _review(change: ChangeRequest, actor: Any, decision: str, comment: str) -> Review:
    identity = identity_of(actor)
    if identity == identity_of(change.author):
        verb = "approve" if decision == Decision.APPROVE else "reject"
        raise Forbidden(
            f"the author cannot {verb} their own change request"
            + (" (cancel it instead)" if decision == Decision.REJECT else ""),
            field="reviewer",
        )
    if change.reviews.filter(reviewer_identity=identity).exists():
        raise Conflict(
            f"{identity.split(':', 1)[-1]} already reviewed change request {change.pk}",
            field="reviewer",
        )
    who = author_fields(actor)
    review = Review(
        change_request=change,
        reviewer_type=who["author_type"],
        reviewer_id=who["author_id"],
        reviewer_name=who["author_name"],
        reviewer_identity=identity,
        decision=decision,
        comment=comment[:1000],
    )
    review.save()
    return review


def _finish(change: ChangeRequest, outcome: Outcome, actor: Any) -> None:
    """Record the outcome of applying ``change`` (row locked, audited)."""
    _move(change, Status.APPLIED if outcome.status == "applied" else Status.FAILED)
    change.result = outcome.message
    change.after = outcome.after or {}
    if outcome.status == "applied":
        change.applied_at = timezone.now()
    change.save()
    _audit(
        change,
        actor,
        "applied" if outcome.status == "applied" else "failed",
        result=outcome.message,
    )


def change_request_approve(
    *, change_request_id: Any, actor: Any, comment: str = ""
) -> ChangeRequest:
    """Approve; with the last approval needed, apply the change, exactly once.

    Raise Forbidden for the author, Conflict for a second review by the
    same person, InvalidTransition when it is no longer pending. A change
    that can no longer apply (stale, refused by its service) ends failed,
    with the reason in ``result``.
    """
    change = change_request_get(change_request_id)
    op = operation_get(change.operation)
    # the approval itself appends to the environment's chain; an atomic
    # change applied here too (flag states, overrides, kills) stays in it
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = _lock(change.pk)
        if change.status != Status.PENDING:
            raise InvalidTransition(
                f"change request {change.pk} is {change.status}: only a pending "
                "one can be approved",
                field="status",
            )
        _review(change, actor, Decision.APPROVE, comment)
        approvals = change.reviews.filter(decision=Decision.APPROVE).count()
        last = approvals >= change.required_approvals
        if last:
            _move(change, Status.APPROVED)
            change.save()
        _audit(
            change,
            actor,
            "approved",
            approvals=approvals,
            required_approvals=change.required_approvals,
            comment=comment[:1000],
        )
        if last and op.atomic:
            _finish(change, apply_now(change, op, change.based_on), actor)
    if last and not op.atomic:
        return change_request_apply(change_request_id=change.pk, actor=actor)
    return change


def change_request_apply(*, change_request_id: Any, actor: Any) -> ChangeRequest:
    """Apply an approved change request; a no-op for any other status.

    The approval applies atomic changes itself; this applies a rollout
    start (whose preflight runs outside any transaction: the request is
    claimed first, so only one caller applies it) and approved requests a
    crash left behind (``changes_reap``).
    """
    change = change_request_get(change_request_id)
    op = operation_get(change.operation)
    if op.atomic:
        with audited_transaction(chains=chains_of(op, change.environment)):
            change = _lock(change.pk)
            if change.status == Status.APPROVED:
                _finish(change, apply_now(change, op, change.based_on), actor)
        return change
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = _lock(change.pk)
        if change.status != Status.APPROVED:
            return change
        _move(change, Status.APPLYING)
        change.save()
    # no transaction open: the preflight may call health-check providers
    outcome = apply_outside(change, op)
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = _lock(change.pk)
        if change.status == Status.APPLYING:
            _finish(change, outcome, actor)
    return change


def change_request_reject(
    *, change_request_id: Any, actor: Any, comment: str = ""
) -> ChangeRequest:
    """Reject a pending change request (one rejection ends it)."""
    change = change_request_get(change_request_id)
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = _lock(change.pk)
        if change.status != Status.PENDING:
            raise InvalidTransition(
                f"change request {change.pk} is {change.status}: only a pending "
                "one can be rejected",
                field="status",
            )
        _review(change, actor, Decision.REJECT, comment)
        _move(change, Status.REJECTED)
        change.result = f"rejected: {comment}"[:1000] if comment else "rejected"
        change.save()
        _audit(change, actor, "rejected", comment=comment[:1000])
    return change


def change_request_cancel(
    *, change_request_id: Any, actor: Any, reason: str = ""
) -> ChangeRequest:
    """Cancel a pending change request; only its author may."""
    change = change_request_get(change_request_id)
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = _lock(change.pk)
        if identity_of(actor) != identity_of(change.author):
            raise Forbidden(
                f"only the author ({change.author_name}) can cancel change request "
                f"{change.pk}",
                field="author",
            )
        if change.status != Status.PENDING:
            raise InvalidTransition(
                f"change request {change.pk} is {change.status}: only a pending "
                "one can be cancelled",
                field="status",
            )
        _move(change, Status.CANCELLED)
        change.result = f"cancelled: {reason}"[:1000] if reason else "cancelled"
        change.save()
        _audit(change, actor, "cancelled", reason=reason[:500])
    return change


def change_requests_reap(*, actor: Any, now: dt.datetime | None = None) -> int:
    """Finish what a crash left: approved but unapplied, or stuck applying.

    An approval commits before a rollout start is applied; a worker can die
    in between or during the preflight. Approved requests older than a few
    seconds are applied now; one applying for over two minutes is handed
    back (``rollout_start`` returns a started rollout unchanged, so a
    repeat is harmless). Return how many were applied.
    """
    now = now or timezone.now()
    stuck = ChangeRequest.objects.filter(
        status=Status.APPLYING, updated_at__lt=now - dt.timedelta(minutes=2)
    ).values_list("pk", flat=True)
    for pk in list(stuck):
        change = change_request_get(pk)
        with audited_transaction(chains=[environment_chain(change.environment.key)]):
            change = _lock(pk)
            if change.status == Status.APPLYING:
                _move(change, Status.APPROVED)
                change.save()
                _audit(change, actor, "retried", reason="applier did not finish")
    waiting = ChangeRequest.objects.filter(
        status=Status.APPROVED, updated_at__lt=now - dt.timedelta(seconds=5)
    ).values_list("pk", flat=True)
    applied = 0
    for pk in list(waiting):
        if change_request_apply(change_request_id=pk, actor=actor).status in (
            Status.APPLIED,
            Status.FAILED,
        ):
            applied += 1
    return applied
