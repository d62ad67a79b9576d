"""The rollout page's buttons: what each one asks and which service it calls."""

from __future__ import annotations

from canary import services
from canary.admin.forms import (
    FailPhaseForm,
    ReasonForm,
    RequiredReasonForm,
    RollbackForm,
)
from canary.admin.object_actions import ObjectAction
from canary.models import Rollout, RolloutStatus
from canary.transitions import ACTIVE
from controlplane.audit.actors import Actor
from flags.changes import gate
from flags.changes.models import ChangeRequest

Status = RolloutStatus
ROLLOUT_START = "rollout.start"


# The rollout page's buttons are the admin's object actions.
RolloutAction = ObjectAction


def _start(actor: Actor, rollout: Rollout, data: dict) -> Rollout | ChangeRequest:
    reason = data.get("reason", "")
    outcome = gate.submit(  # four-eyes may turn it into a change request
        actor=actor,
        operation=ROLLOUT_START,
        arguments={"rollout": rollout.pk, "reason": reason},
        apply=lambda: services.rollout_start_checked(
            rollout_id=rollout.pk, actor=actor, reason=reason
        ),
    )
    if outcome.is_pending:
        return outcome.change_request
    started, _ = outcome.result
    return started


def approvals_needed(action: RolloutAction, rollout: Rollout) -> int:
    """Return how many approvals ``action`` on ``rollout`` needs (0: applies now)."""
    if action.operation is None:
        return 0
    return gate.needs_approval(
        operation=action.operation, arguments={"rollout": rollout.pk}
    )


ACTIONS: dict[str, RolloutAction] = {
    action.name: action
    for action in (
        RolloutAction(
            "start",
            "Start",
            "The preflight runs first: every check answers once, the flag "
            "exists, and the rollback levels the checks ask for are possible. Then the flag "
            "state is captured and phase 1 goes live.",
            ReasonForm,
            _start,
            frozenset({Status.DRAFT}),
            operation=ROLLOUT_START,
        ),
        RolloutAction(
            "approve",
            "Approve",
            "Approve leaving the current phase: the rollout advances at "
            "the next tick once the other gates are open.",
            ReasonForm,
            lambda actor, r, d: services.rollout_approve(
                rollout_id=r.pk, actor=actor, reason=d.get("reason", "")
            ),
            frozenset(ACTIVE),
        ),
        RolloutAction(
            "pause",
            "Pause",
            "The rollout stops advancing. Checks keep running, and a failure "
            "still rolls back.",
            RequiredReasonForm,
            lambda actor, r, d: services.rollout_pause(
                rollout_id=r.pk, actor=actor, reason=d["reason"]
            ),
            frozenset({Status.RUNNING, Status.AWAITING_APPROVAL}),
        ),
        RolloutAction(
            "resume",
            "Resume",
            "The rollout runs again; the current phase's check counters start afresh.",
            ReasonForm,
            lambda actor, r, d: services.rollout_resume(
                rollout_id=r.pk, actor=actor, reason=d.get("reason", "")
            ),
            frozenset({Status.PAUSED}),
        ),
        RolloutAction(
            "abort",
            "Abort",
            "The rollout ends and the flag state and pilot overrides are put "
            "back as they were captured at start.",
            RequiredReasonForm,
            lambda actor, r, d: services.rollout_abort(
                rollout_id=r.pk, actor=actor, reason=d["reason"]
            ),
            frozenset({Status.DRAFT, *ACTIVE}),
            is_destructive=True,
        ),
        RolloutAction(
            "fail-phase",
            "Fail phase",
            "Fail the current phase by hand: the rollout pauses or "
            "rolls back as its checks' on_failure says (or as chosen here).",
            FailPhaseForm,
            lambda actor, r, d: services.rollout_fail_phase(
                rollout_id=r.pk,
                actor=actor,
                reason=d["reason"],
                on_failure=d.get("on_failure") or None,
            ),
            frozenset(ACTIVE),
            is_destructive=True,
        ),
        RolloutAction(
            "rollback",
            "Roll back now",
            "Roll back now through the rollback engine. Level 1 "
            "restores the flag state captured at start; levels 2 and 3 also revert the "
            "deployment and its migrations. A rollout already rolled back escalates to "
            "the level chosen (deployment revert, then migration revert).",
            RollbackForm,
            lambda actor, r, d: services.rollout_rollback(
                rollout_id=r.pk, level=d["level"], actor=actor, reason=d["reason"]
            ),
            frozenset({*ACTIVE, Status.ROLLING_BACK, Status.ROLLED_BACK}),
            is_destructive=True,
        ),
        RolloutAction(
            "stop-escalation",
            "Stop automatic escalation",
            "After a rollback the checks keep measuring the merchants that were "
            "treated; when they are still worse, the controller escalates to the "
            "next level by itself. Stop that here: the verification still says "
            "what it finds, but only an operator escalates (Roll back now).",
            RequiredReasonForm,
            lambda actor, r, d: services.rollout_escalation_stop(
                rollout_id=r.pk, actor=actor, reason=d["reason"]
            ),
            frozenset({Status.DRAFT, *ACTIVE, Status.ROLLING_BACK, Status.ROLLED_BACK}),
            lambda r: r.auto_escalate,
        ),
    )
}
