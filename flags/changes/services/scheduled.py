"""Scheduled changes: schedule, cancel, and apply when due (the beat tick).

A due change is applied exactly once: the applier locks its row with
``select_for_update(skip_locked=True)`` and moves its status in the same
transaction as the change and the audit event, so a second worker (or a
redelivered tick) finds nothing left to do. Due items a stopped worker
missed are applied on the next tick after a restart.
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
    InvalidInput,
    InvalidTransition,
    NotFound,
)
from flags.changes.models import ScheduledChange
from flags.changes.models import ScheduledChangeStatus as Status
from flags.changes.operations import chains_of, operation_get, target_of
from flags.changes.services._common import (
    Outcome,
    apply_now,
    apply_outside,
    approvals_required,
    author_fields,
    based_on,
)
from flags.changes.transitions import SCHEDULE_ALLOWED

# How far ahead a change may be scheduled.
MAX_AHEAD = dt.timedelta(days=366)
# An applier that claimed a rollout start and did not finish in this long
# is presumed dead; the next tick hands the change back.
STUCK_AFTER = dt.timedelta(minutes=2)


def scheduled_change_get(scheduled_change_id: Any) -> ScheduledChange:
    """Return the scheduled change ``scheduled_change_id``; raise NotFound."""
    try:
        pk = int(str(scheduled_change_id).strip())
    except ValueError:
        raise InvalidInput(
            f"scheduled change: {scheduled_change_id!r} is not an id", field="id"
        ) from None
    found = (
        ScheduledChange.objects.select_related("environment").filter(pk=pk).first()
        if 0 < pk < 2**63
        else None
    )
    if found is None:
        raise NotFound(f"unknown scheduled change {scheduled_change_id}", field="id")
    return found


def _audit(change: ScheduledChange, actor: Any, action: str, **details: Any) -> None:
    record_audit_event(
        actor=actor,
        action=f"scheduled_change.{action}",
        target=change,
        environment=change.environment.key,
        after={"status": change.status},
        details={
            "operation": change.operation,
            "arguments": change.arguments,
            "run_at": change.run_at,
            "based_on_version": change.based_on_version,
            **details,
        },
    )


def _move(change: ScheduledChange, to: str) -> None:
    if to not in SCHEDULE_ALLOWED[change.status]:
        raise InvalidTransition(
            f"scheduled change {change.pk} is {change.status}, it cannot become {to}",
            field="status",
        )
    change.status = to


def scheduled_change_create(
    *,
    actor: Any,
    operation: str,
    arguments: Any,
    run_at: dt.datetime,
    expected_version: int | None = None,
    reason: str = "",
) -> ScheduledChange:
    """Schedule ``operation`` for ``run_at``, based on the current flag state.

    Refuse a time in the past or more than a year ahead, and a change the
    environment's policy requires approval for (a schedule must not be a
    way around four-eyes: create a change request instead).
    """
    op = operation_get(operation)
    if not isinstance(run_at, dt.datetime) or timezone.is_naive(run_at):
        raise InvalidInput("run_at: needs a time zone", field="run_at")
    now = timezone.now()
    if run_at <= now:
        raise InvalidInput("run_at: must be in the future", field="run_at")
    if run_at > now + MAX_AHEAD:
        raise InvalidInput("run_at: at most a year ahead", field="run_at")
    arguments = op.validate(arguments)
    environment, version, values = based_on(op, arguments, expected_version)
    needed = approvals_required(op, environment)
    if needed:
        raise Conflict(
            f"{environment.key} requires {needed} approval(s) for "
            f"{op.kind.replace('_', ' ')} changes: create a change request instead",
            field="operation",
        )
    change = ScheduledChange(
        environment=environment,
        operation=op.name,
        arguments=arguments,
        target=target_of(op, arguments)[:200],
        run_at=run_at,
        based_on_version=version,
        based_on=values,
        reason=reason[:500],
        **author_fields(actor),
    )
    with audited_transaction(chains=[environment_chain(environment.key)]):
        change.full_clean()
        change.save()
        _audit(change, actor, "created")
    return change


def scheduled_change_cancel(
    *, scheduled_change_id: Any, actor: Any, reason: str = ""
) -> ScheduledChange:
    """Cancel a change that has not run yet."""
    change = scheduled_change_get(scheduled_change_id)
    with audited_transaction(chains=[environment_chain(change.environment.key)]):
        change = (
            ScheduledChange.objects.select_for_update(of=("self",))
            .select_related("environment")
            .get(pk=change.pk)
        )
        if change.status != Status.SCHEDULED:
            raise InvalidTransition(
                f"scheduled change {change.pk} is {change.status}: only a "
                "scheduled one can be cancelled",
                field="status",
            )
        _move(change, Status.CANCELLED)
        change.result = f"cancelled: {reason}"[:1000] if reason else "cancelled"
        change.save()
        _audit(change, actor, "cancelled", reason=reason[:500])
    return change


def expected_values(change: ScheduledChange) -> dict:
    """Return what the fields ``change`` sets should be now (the stale rule).

    The values it was based on, updated by the scheduled changes of the
    same target applied since it was created: "10% at 9:00, then 50% at
    10:00" is one plan, not a conflict. Anything else that changed those
    fields makes the change stale.
    """
    expected = dict(change.based_on)
    earlier = (
        ScheduledChange.objects.filter(
            environment_id=change.environment_id,
            target=change.target,
            status=Status.APPLIED,
            applied_at__gte=change.created_at,
        )
        .exclude(pk=change.pk)
        .order_by("applied_at", "id")
    )
    for prior in earlier:
        expected.update(
            {name: value for name, value in prior.after.items() if name in expected}
        )
    return expected


def _record(change: ScheduledChange, outcome: Outcome, actor: Any) -> None:
    to = {
        "applied": Status.APPLIED,
        "stale": Status.REFUSED,
        "failed": Status.FAILED,
    }[outcome.status]
    _move(change, to)
    change.result = outcome.message
    change.after = outcome.after or {}
    if to == Status.APPLIED:
        change.applied_at = timezone.now()
    change.save()
    _audit(
        change,
        actor,
        {"applied": "applied", "stale": "refused", "failed": "failed"}[outcome.status],
        result=outcome.message,
        late_seconds=round((timezone.now() - change.run_at).total_seconds(), 3),
    )


def scheduled_change_apply(
    *, scheduled_change_id: int, actor: Any, now: dt.datetime | None = None
) -> ScheduledChange | None:
    """Apply one due change; return None when someone else has it or had it.

    The change runs as its author; ``actor`` (the worker) is recorded on the
    scheduled change's own events.
    """
    now = now or timezone.now()
    head = scheduled_change_get(scheduled_change_id)
    op = operation_get(head.operation)
    due = ScheduledChange.objects.select_for_update(
        skip_locked=True, of=("self",)
    ).filter(pk=head.pk, status=Status.SCHEDULED, run_at__lte=now)
    if op.atomic:
        with audited_transaction(chains=chains_of(op, head.environment)):
            change = due.select_related("environment").first()
            if change is None:
                return None
            _record(change, apply_now(change, op, expected_values(change)), actor)
        return change
    with audited_transaction(chains=[environment_chain(head.environment.key)]):
        change = due.select_related("environment").first()
        if change is None:
            return None
        _move(change, Status.APPLYING)
        change.save()
    # no transaction open: a rollout's preflight may call its providers
    outcome = apply_outside(change, op)
    with audited_transaction(chains=[environment_chain(head.environment.key)]):
        change = (
            ScheduledChange.objects.select_for_update(of=("self",))
            .select_related("environment")
            .get(pk=head.pk)
        )
        if change.status != Status.APPLYING:
            return None
        _record(change, outcome, actor)
    return change


def scheduled_changes_apply_due(
    *, actor: Any, now: dt.datetime | None = None, limit: int = 100
) -> int:
    """Apply every change due at ``now`` (the beat tick); return how many ran.

    Oldest first. Changes left applying by a dead worker are handed back
    first, so they run again on this tick.
    """
    now = now or timezone.now()
    _reap(actor=actor, now=now)
    due = list(
        ScheduledChange.objects.filter(status=Status.SCHEDULED, run_at__lte=now)
        .order_by("run_at", "id")
        .values_list("pk", flat=True)[:limit]
    )
    applied = 0
    for pk in due:
        if scheduled_change_apply(scheduled_change_id=pk, actor=actor, now=now):
            applied += 1
    return applied


def _reap(*, actor: Any, now: dt.datetime) -> None:
    stuck = ScheduledChange.objects.filter(
        status=Status.APPLYING, updated_at__lt=now - STUCK_AFTER
    ).select_related("environment")
    for head in list(stuck):
        with audited_transaction(chains=[environment_chain(head.environment.key)]):
            change = (
                ScheduledChange.objects.select_for_update(
                    skip_locked=True, of=("self",)
                )
                .filter(pk=head.pk, status=Status.APPLYING)
                .select_related("environment")
                .first()
            )
            if change is None:
                continue
            _move(change, Status.SCHEDULED)
            change.save()
            _audit(change, actor, "retried", reason="applier did not finish")


def next_due_at() -> dt.datetime | None:
    """Return when the next scheduled change is due (None: none is)."""
    return (
        ScheduledChange.objects.filter(status=Status.SCHEDULED)
        .order_by("run_at")
        .values_list("run_at", flat=True)
        .first()
    )
