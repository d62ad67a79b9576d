"""Run a rollback's steps in order: claim, act with no transaction open, record.

Crash safety: a succeeded step is never claimed again; a step found running
after its lease expired is verified against reality before it is re-run;
two workers never hold a claim on the same step at once.
"""

from __future__ import annotations

import logging
import os
import socket

from controlplane.conf import setting
from rollback.actuators import ACTUATORS, ActuatorError, StepContext
from rollback.services.runs import rollback_step_claim, rollback_step_finish

logger = logging.getLogger(__name__)


def worker_name() -> str:
    """Return host:pid, recorded on claims so an operator sees who ran a step."""
    return f"{socket.gethostname()}:{os.getpid()}"


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
        if claim.verify_first:
            # The last worker died mid-step: the side effect may have happened.
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
                    output="target state already true (verified after an interrupted attempt)",
                )
                if on_progress:
                    on_progress(claim, "succeeded", "verified")
                continue
            limit = int(setting("ROLLBACK_STEP_MAX_ATTEMPTS"))
            if claim.attempt > limit:
                # Workers keep dying on this step: stop instead of looping.
                message = f"gave up: {claim.attempt - 1} attempt(s) interrupted, limit {limit}"
                rollback_step_finish(
                    claim=claim,
                    succeeded=False,
                    output=message,
                    error=message,
                    retryable=False,
                )
                if on_progress:
                    on_progress(claim, "failed", message)
                continue
        try:
            output = actuator.execute(claim.params, ctx)
        except ActuatorError as exc:
            text = "\n".join(
                part for part in (exc.output, f"error: {exc.message}") if part
            )
            fail_text = text
            delay = rollback_step_finish(
                claim=claim,
                succeeded=False,
                output=text,
                error=exc.message,
                retryable=exc.retryable,
            )
        except (
            Exception
        ) as exc:  # an actuator bug becomes a failed step, not a lost task
            logger.exception(
                "actuator %s crashed on step %s", claim.actuator, claim.step_id
            )
            message = f"{type(exc).__name__}: {exc}"
            fail_text = message
            delay = rollback_step_finish(
                claim=claim, succeeded=False, output=message, error=message
            )
        else:
            rollback_step_finish(claim=claim, succeeded=True, output=output)
            if on_progress:
                on_progress(claim, "succeeded", output)
            continue
        if on_progress:
            on_progress(claim, "retry" if delay is not None else "failed", fail_text)
        if delay is not None:
            return delay
        # The run failed: the next claim returns None.


def actuator_plan(claim) -> str:
    try:
        return ACTUATORS[claim.actuator].plan(claim.params)
    except Exception as exc:
        return f"(plan unavailable: {exc})"
