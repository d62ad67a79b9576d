"""Allowed status moves of change requests and scheduled changes."""

from __future__ import annotations

from flags.changes.models import ChangeRequestStatus as R
from flags.changes.models import ScheduledChangeStatus as S

REQUEST_ALLOWED: dict[str, frozenset[str]] = {
    R.PENDING: frozenset({R.APPROVED, R.REJECTED, R.CANCELLED}),
    R.APPROVED: frozenset({R.APPLYING, R.APPLIED, R.FAILED}),
    R.APPLYING: frozenset({R.APPLIED, R.FAILED, R.APPROVED}),
    R.APPLIED: frozenset(),
    R.REJECTED: frozenset(),
    R.CANCELLED: frozenset(),
    R.FAILED: frozenset(),
}

SCHEDULE_ALLOWED: dict[str, frozenset[str]] = {
    S.SCHEDULED: frozenset({S.APPLYING, S.APPLIED, S.REFUSED, S.FAILED, S.CANCELLED}),
    S.APPLYING: frozenset({S.APPLIED, S.FAILED, S.SCHEDULED}),
    S.APPLIED: frozenset(),
    S.CANCELLED: frozenset(),
    S.REFUSED: frozenset(),
    S.FAILED: frozenset(),
}
