"""The rollout status machine, written down once as data.

``canary.services.rollout_transition`` is the only code that assigns a
rollout's status; it consults this table under a row lock.
"""

from __future__ import annotations

from canary.models import RolloutStatus as Status

ALLOWED: dict[str, frozenset[str]] = {
    Status.DRAFT: frozenset({Status.RUNNING, Status.ABORTED}),
    Status.RUNNING: frozenset(
        {
            Status.PAUSED,
            Status.AWAITING_APPROVAL,
            Status.COMPLETED,
            Status.ROLLING_BACK,
            Status.ABORTED,
        }
    ),
    Status.AWAITING_APPROVAL: frozenset(
        {Status.RUNNING, Status.PAUSED, Status.ROLLING_BACK, Status.ABORTED}
    ),
    Status.PAUSED: frozenset({Status.RUNNING, Status.ROLLING_BACK, Status.ABORTED}),
    Status.ROLLING_BACK: frozenset({Status.ROLLED_BACK}),
    Status.COMPLETED: frozenset(),
    Status.ROLLED_BACK: frozenset(),
    Status.ABORTED: frozenset(),
}

TERMINAL: frozenset[str] = frozenset(
    status for status, targets in ALLOWED.items() if not targets
)
# Statuses in which the flag is being moved by the rollout and checks run.
ACTIVE: frozenset[str] = frozenset(
    {Status.RUNNING, Status.AWAITING_APPROVAL, Status.PAUSED}
)


def is_allowed(current: str, to: str) -> bool:
    """Return whether a rollout in ``current`` may move to ``to``."""
    return to in ALLOWED.get(current, frozenset())
