"""Step 4 of a tick: move each rollout at most once, in one transaction.

``decide`` reads the gate without locks; only a decision that calls for a
transition locks what it writes (``_lock_for_decision``: the audit chain,
then the environment, the rollout's checks and the rollout with SKIP
LOCKED) and decides again from the locked rows. Every automatic decision
carries its explanation (``canary.controller.explain``); a rolling-back
rollout is handed to ``canary.controller.rollbacks``.
"""

from __future__ import annotations

from django.db import transaction

from canary import clock, metrics
from canary.controller.explain import (
    evidence_summary,
    explain,
    explain_checks,
    rollback_cause,
)
from canary.controller.release_decide import release_decide
from canary.controller.rollbacks import (
    rollback_ended,
    rollback_nudge,
    rollback_progress,
)
from canary.controller.verify import verification_decide
from canary.health import GateAction, GateDecision
from canary.models import HealthCheck, Rollout, RolloutStatus
from canary.services import (
    rollout_advance,
    rollout_fail_phase,
    rollout_gate,
    rollout_pause,
    rollout_transition,
)
from canary.transitions import ACTIVE
from controlplane.audit.actors import CONTROLLER
from controlplane.audit.services import audit_chain_lock
from controlplane.conf import setting
from flags.models import Environment

Status = RolloutStatus


def tick_interval() -> float:
    """Return the beat interval (CANARY_TICK_SECONDS); the tick and the dev
    loop read it here too, below every step, so no import goes in a circle."""
    return float(setting("CANARY_TICK_SECONDS"))


def _after_commit_tick(rollout_id: int, countdown: float | None = None) -> None:
    from canary.tasks import rollout_tick_soon

    transaction.on_commit(lambda: rollout_tick_soon(rollout_id, countdown=countdown))


def _is_wanted(rollout: Rollout, decision: GateDecision) -> bool:
    """Return whether ``decision`` calls for a transition of ``rollout``."""
    if decision.action == GateAction.FAIL:
        return not (decision.on_failure == "pause" and rollout.status == Status.PAUSED)
    if decision.action == GateAction.PAUSE:
        return rollout.status != Status.PAUSED
    return rollout.status == Status.RUNNING and decision.action in (
        GateAction.AWAIT_APPROVAL,
        GateAction.ADVANCE,
    )


def _lock_for_decision(rollout_id: int, environment_id: int) -> Rollout | None:
    """Lock what a decision writes, or return None to decide next tick.

    The audit chain lock comes first. Every audited write takes it, but
    after rows of its own, in differing orders (a flag state change locks
    its environment first and a flag creation last), so a controller that
    waited for a row while holding the chain could deadlock with one of
    them. Holding the chain, it waits for nothing it can skip: the
    environment (whose ruleset version the decision bumps), the rollout's
    checks (a measurement being recorded) and the rollout itself are taken
    with SKIP LOCKED, and any of them busy defers the decision.
    """
    audit_chain_lock()
    if not list(
        Environment.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=environment_id)
        .values_list("pk", flat=True)
    ):
        return None
    ids = list(
        HealthCheck.objects.filter(rollout_id=rollout_id).values_list("pk", flat=True)
    )
    locked = list(
        HealthCheck.objects.select_for_update(skip_locked=True)
        .filter(pk__in=ids)
        .values_list("pk", flat=True)
    )
    if len(locked) != len(ids):
        return None
    return (
        Rollout.objects.select_for_update(skip_locked=True, no_key=True)
        .filter(pk=rollout_id)
        .first()
    )


def decide(rollout_id: int) -> dict | None:
    """Apply at most one transition to the rollout, in one transaction.

    The gate is first read without locks; only a decision that calls for a
    transition locks (see ``_lock_for_decision``) and decides again from
    the locked rows. Return what was done (``{"rollout", "action",
    "reason"}``) or None.
    """
    rollout = Rollout.objects.filter(pk=rollout_id).first()
    if rollout is None:
        return None
    if rollout.status == Status.ROLLED_BACK:
        # After the rollback: its verification window (canary.controller.verify).
        return verification_decide(rollout, _lock_for_decision)
    if rollout.status in ACTIVE:
        decision = rollout_gate(rollout=rollout, now=clock.now())
        if not _is_wanted(rollout, decision):
            # Hold. When only min_duration is left and it ends before the
            # next beat, tick exactly then.
            if (
                decision.action == GateAction.HOLD
                and 0 < decision.remaining <= tick_interval()
            ):
                _after_commit_tick(rollout.pk, countdown=decision.remaining + 0.05)
            return None
    elif rollout.status != Status.ROLLING_BACK or not rollback_ended(rollout):
        if rollout.status == Status.ROLLING_BACK:
            rollback_nudge(rollout)
        return None
    with transaction.atomic():
        rollout = _lock_for_decision(rollout.pk, rollout.environment_id)
        if rollout is None:
            return None  # busy: another controller, an operator, a measurement
        if rollout.status == Status.ROLLING_BACK:
            return rollback_progress(rollout)
        if rollout.status not in ACTIVE:
            return None
        decision = rollout_gate(rollout=rollout, now=clock.now())
        if not _is_wanted(rollout, decision):
            return None
        if rollout.release_id is not None and _is_release_move(rollout, decision):
            return release_decide(rollout, decision)
        if decision.action == GateAction.FAIL:
            return _fail(rollout, decision)
        if decision.action == GateAction.PAUSE:
            explained = explain_checks(rollout, decision.checks)
            reason = "automatic pause: " + (
                "; ".join(decision.reasons[:1]) + "; " + explain(decision, explained)
                if decision.reasons and decision.reasons[0].startswith("max_duration")
                else explain(decision, explained)
            )
            rollout_pause(
                rollout_id=rollout.pk,
                actor=CONTROLLER,
                reason=reason,
                details={
                    "decision": "pause",
                    "gate": list(decision.reasons),
                    "checks": explained,
                },
            )
            return {"rollout": rollout.pk, "action": "pause", "reason": reason}
        if rollout.status != Status.RUNNING:
            return None  # awaiting approval or paused: only a failure acts
        if decision.action == GateAction.AWAIT_APPROVAL:
            reason = "; ".join(decision.reasons) + ": every other gate is open"
            rollout_transition(
                rollout_id=rollout.pk,
                to=Status.AWAITING_APPROVAL,
                actor=CONTROLLER,
                reason=reason,
                details={
                    "decision": "await_approval",
                    "checks": evidence_summary(rollout),
                },
            )
            return {"rollout": rollout.pk, "action": "await_approval", "reason": reason}
        if decision.action == GateAction.ADVANCE:
            phase_index = rollout.current_phase
            reason = "; ".join(decision.reasons)
            after = rollout_advance(
                rollout_id=rollout.pk,
                expected_phase=phase_index,
                actor=CONTROLLER,
                reason=reason,
                details={"decision": "advance", "checks": evidence_summary(rollout)},
            )
            if after.status != Status.COMPLETED:
                # The next phase's checks are due now: measure them without
                # waiting for the beat.
                _after_commit_tick(rollout.pk)
            return {
                "rollout": rollout.pk,
                "action": "advance",
                "from_phase": phase_index,
                "status": after.status,
                "reason": reason,
            }
        return None


def _is_release_move(rollout: Rollout, decision: GateDecision) -> bool:
    """Return whether a release decides this (an advance or a rollback;
    pauses and approvals stay the member's own)."""
    if decision.action == GateAction.FAIL:
        return (decision.on_failure or "rollback_1") != "pause"
    return decision.action == GateAction.ADVANCE and rollout.status == Status.RUNNING


def _fail(rollout: Rollout, decision: GateDecision) -> dict | None:
    """Act on a failed check: its on_failure (pause, or rollback 1/2/3)."""
    on_failure = decision.on_failure or "rollback_1"
    if on_failure == "pause" and rollout.status == Status.PAUSED:
        return None  # already paused: pausing again would say nothing new
    explained = explain_checks(rollout, decision.checks)
    reason = "automatic " + (
        "pause"
        if on_failure == "pause"
        else f"rollback level {on_failure.rsplit('_', 1)[1]}"
    )
    reason = f"{reason}: {explain(decision, explained)}"
    details = {
        "decision": "fail",
        "on_failure": on_failure,
        "while": rollout.status,
        "gate": list(decision.reasons),
        "checks": explained,
    }
    rollout_fail_phase(
        rollout_id=rollout.pk,
        actor=CONTROLLER,
        reason=reason,
        on_failure=on_failure,
        details=details,
    )
    if on_failure != "pause":
        cause, seconds = rollback_cause(explained, on_failure)
        transaction.on_commit(
            lambda: metrics.automatic_rollback_counted(cause, seconds)
        )
        # Finish the rollout as soon as the rollback run is done.
        _after_commit_tick(rollout.pk)
    return {"rollout": rollout.pk, "action": f"fail:{on_failure}", "reason": reason}
