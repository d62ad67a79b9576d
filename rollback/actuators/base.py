"""The actuator protocol: plan, execute, verify. Each is idempotent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from controlplane.audit.actors import Actor


class ActuatorError(Exception):
    """An actuator could not reach its target state; ``output`` says why."""

    def __init__(
        self, message: str, *, output: str = "", retryable: bool = True
    ) -> None:
        super().__init__(message)
        self.message = message
        self.output = output
        self.retryable = retryable


@dataclass(frozen=True)
class StepContext:
    """What an actuator knows about the step it runs for."""

    step_id: int
    run_id: int
    attempt: int
    actor: Actor
    reason: str = ""


class Actuator(Protocol):
    kind: str

    def plan(self, params: dict[str, Any]) -> str:
        """Return what execute would do, without doing it."""

    def execute(self, params: dict[str, Any], ctx: StepContext) -> str:
        """Bring the target to its state; return output; raise ActuatorError."""

    def verify(self, params: dict[str, Any]) -> bool:
        """Return whether the target state is already true."""

    def timeout(self, params: dict[str, Any]) -> float:
        """Return the longest execute may take (sets the claim lease)."""

    def heartbeats(self, params: dict[str, Any]) -> bool:
        """Return whether all slow work runs as commands that renew the lease.

        Then the lease is short and renewed (a dead worker is noticed within
        seconds); otherwise it lasts ``timeout`` plus the grace.
        """
