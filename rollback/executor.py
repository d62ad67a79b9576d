"""Run a rollback's steps in order: claim, act with no transaction open, record.

Crash safety: a succeeded step is never claimed again; a step found running
after its lease expired is verified against reality before it is re-run
(after killing what its last command left running on this host); two
workers never hold a claim on the same step at once. Commands run for a step
renew its lease and die with their worker (rollback.actuators.processes).
"""

from __future__ import annotations

import logging
import os
import socket

from controlplane.conf import setting
from rollback.actuators import ACTUATORS, ActuatorError, StepContext
from rollback.actuators.processes import (
    StepProcessHooks,
    host_name,
    process_group_kill,
    step_process_hooks,
    step_tag,
)
from rollback.services.steps import (
    Claim,
    rollback_step_claim,
    rollback_step_finish,
    rollback_step_heartbeat,
    rollback_step_process_started,
)

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """Return host:pid, recorded on claims so an operator sees who ran a step."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _hooks(claim: Claim) -> StepProcessHooks:
    def on_spawn(pgid: int, host: str) -> None:
        try:
            rollback_step_process_started(claim=claim, pgid=pgid, host=host)
        except Exception:  # bookkeeping must not stop the revert itself
            logger.exception("cannot record process group of step %s", claim.step_id)

    def heartbeat() -> bool:
        try:
            return rollback_step_heartbeat(claim=claim)
        except Exception:
            # A database blip must not kill a half-done revert; a lost
            # claim shows on the next heartbeat that gets through.
            logger.exception("cannot renew the lease of step %s", claim.step_id)
            return True

    return StepProcessHooks(
        tag=step_tag(claim.step_id),
        on_spawn=on_spawn,
        heartbeat=heartbeat,
        every=float(setting("ROLLBACK_STEP_HEARTBEAT_SECONDS")),
    )


def _kill_abandoned(claim: Claim) -> str:
    """Kill what the interrupted attempt left running; return a note for the output."""
    if not claim.abandoned_group:
        return ""
    where = f"process group {claim.abandoned_group} on {claim.abandoned_host}"
    if claim.abandoned_host != host_name():
        # Its supervisor kills it when its worker dies; from here it cannot
        # even be seen.
        return f"left {where} alone (another host; its supervisor ends it)"
    killed = process_group_kill(claim.abandoned_group, tag=step_tag(claim.step_id))
    if killed:
        logger.warning("killed leftover %s of step %s", where, claim.step_id)
        return f"killed leftover {where}: pids {', '.join(map(str, killed))}"
    return f"{where} was already gone"


def rollback_run_execute(
    *, run_id: int, worker: str = "", on_progress=None
) -> float | None:
    """Execute the run's remaining steps; return a retry delay if one is due.

    No ORM transaction is open while an actuator runs. ``on_progress`` (if
    given) is called with (claim, event, text) for interfaces that print.
    """
    worker = worker or worker_name()
    while True:
        claim = rollback_step_claim(run_id=run_id, worker=worker)
        if claim is None:
            return None
        with step_process_hooks(_hooks(claim)):
            delay = _execute_step(claim, on_progress)
        if delay is not None:
            return delay


def _execute_step(claim: Claim, on_progress) -> float | None:
    """Verify (after an interruption) and execute one claimed step.

    Return a retry delay when one is due, else None (the caller claims the
    next step, or finds the run finished or failed).
    """
    actuator = ACTUATORS[claim.actuator]
    ctx = StepContext(
        step_id=claim.step_id,
        run_id=claim.run_id,
        attempt=claim.attempt,
        actor=claim.actor,
        reason=claim.reason,
    )
    if on_progress:
        on_progress(claim, "started", actuator_plan(claim))
    note = ""
    if claim.verify_first:
        # The last worker died mid-step: the side effect may have happened.
        # Its command must be gone first, or it could still finish after
        # the verify and happen twice.
        note = _kill_abandoned(claim)
        try:
            already = actuator.verify(claim.params)
        except Exception:  # a broken verify must not hide the step
            logger.exception("verify failed for step %s", claim.step_id)
            already = False
        if already:
            rollback_step_finish(
                claim=claim,
                succeeded=True,
                verified=True,
                output=_joined(
                    note,
                    "target state already true (verified after an interrupted attempt)",
                ),
            )
            if on_progress:
                on_progress(claim, "succeeded", "verified")
            return None
        limit = int(setting("ROLLBACK_STEP_MAX_ATTEMPTS"))
        if claim.attempt > limit:
            # Workers keep dying on this step: stop instead of looping.
            message = (
                f"gave up: {claim.attempt - 1} attempt(s) interrupted, limit {limit}"
            )
            rollback_step_finish(
                claim=claim,
                succeeded=False,
                output=_joined(note, message),
                error=message,
                retryable=False,
            )
            if on_progress:
                on_progress(claim, "failed", message)
            return None
    try:
        output = actuator.execute(claim.params, ctx)
    except ActuatorError as exc:
        text = _joined(exc.output, f"error: {exc.message}")
        fail_text = text
        delay = rollback_step_finish(
            claim=claim,
            succeeded=False,
            output=_joined(note, text),
            error=exc.message,
            retryable=exc.retryable,
        )
    except Exception as exc:  # an actuator bug becomes a failed step, not a lost task
        logger.exception(
            "actuator %s crashed on step %s", claim.actuator, claim.step_id
        )
        message = f"{type(exc).__name__}: {exc}"
        fail_text = message
        delay = rollback_step_finish(
            claim=claim, succeeded=False, output=_joined(note, message), error=message
        )
    else:
        rollback_step_finish(claim=claim, succeeded=True, output=_joined(note, output))
        if on_progress:
            on_progress(claim, "succeeded", output)
        return None
    if on_progress:
        on_progress(claim, "retry" if delay is not None else "failed", fail_text)
    # None here means the run failed: the next claim returns None.
    return delay


def _joined(*parts: str) -> str:
    return "\n".join(part for part in parts if part)


def actuator_plan(claim) -> str:
    try:
        return ACTUATORS[claim.actuator].plan(claim.params)
    except Exception as exc:
        return f"(plan unavailable: {exc})"
