"""Domain errors of canary rollouts (mapped to HTTP codes like flags' errors)."""

from __future__ import annotations

from controlplane.exceptions import Conflict, InvalidInput, InvalidTransition, NotFound

__all__ = [
    "Conflict",
    "InvalidInput",
    "InvalidTransition",
    "NotFound",
    "RolloutInvalidTransition",
    "RolloutAlreadyActive",
]


class RolloutInvalidTransition(InvalidTransition):
    """A status change the table in ``canary.transitions`` does not allow."""

    def __init__(self, current: str, to: str, *, rollout_id: int | None = None) -> None:
        what = f"rollout {rollout_id}" if rollout_id is not None else "rollout"
        super().__init__(f"{what} cannot go from {current} to {to}", field="status")
        self.current = current
        self.to = to


class RolloutAlreadyActive(Conflict):
    """Another rollout of the same flag and environment is not finished."""

    code = "rollout_already_active"
