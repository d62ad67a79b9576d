"""Every write to change requests, scheduled changes and approval policies."""

from flags.changes.services.policy import approval_policy_set
from flags.changes.services.requests import (
    change_request_apply,
    change_request_approve,
    change_request_cancel,
    change_request_create,
    change_request_get,
    change_request_reject,
    change_requests_reap,
)
from flags.changes.services.scheduled import (
    next_due_at,
    scheduled_change_apply,
    scheduled_change_cancel,
    scheduled_change_create,
    scheduled_change_get,
    scheduled_changes_apply_due,
)

__all__ = [
    "approval_policy_set",
    "change_request_apply",
    "change_request_approve",
    "change_request_cancel",
    "change_request_create",
    "change_request_get",
    "change_request_reject",
    "change_requests_reap",
    "next_due_at",
    "scheduled_change_apply",
    "scheduled_change_cancel",
    "scheduled_change_create",
    "scheduled_change_get",
    "scheduled_changes_apply_due",
]
