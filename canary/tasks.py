"""Celery tasks of the canary controller: they take ids and call one function.

``controller_tick_task`` runs from beat every ``CANARY_TICK_SECONDS``;
``rollout_tick_task`` ticks one rollout at once when a gate opens (a phase
advanced, an approval given, a resume, a start), so advancing never waits
for the beat interval. Both are safe to redeliver (``acks_late``): the
controller applies nothing twice.
"""

from __future__ import annotations

import logging

from celery import current_app, shared_task

logger = logging.getLogger(__name__)


@shared_task(acks_late=True, ignore_result=True)
def controller_tick_task() -> dict:
    """Tick every rollout in progress; return what the tick did."""
    from canary.controller import controller_tick

    return controller_tick().as_dict()


@shared_task(acks_late=True, ignore_result=True)
def rollout_tick_task(rollout_id: int) -> dict:
    """Tick one rollout now; return what the tick did."""
    from canary.controller import controller_tick

    return controller_tick(rollout_id=int(rollout_id)).as_dict()


def rollout_tick_soon(rollout_id: int, *, countdown: float | None = None) -> None:
    """Schedule a tick of one rollout (now, or in ``countdown`` seconds).

    Call it from ``transaction.on_commit``. With a broker, queue
    ``rollout_tick_task``. Without one (tasks run eagerly), wake the
    in-process controller loop when one runs (``manage.py demo --serve``),
    else tick inline; a delayed tick without a loop is left to the next
    tick. Never raises: beat ticks anyway, so a lost tick only costs one
    interval.
    """
    from canary import controller

    try:
        if current_app.conf.task_always_eager:
            if controller.loop_is_running():
                controller.loop_wake(countdown)
            elif not countdown:
                rollout_tick_task.apply(kwargs={"rollout_id": rollout_id})
            return
        options: dict = {"kwargs": {"rollout_id": rollout_id}}
        if countdown:
            options["countdown"] = countdown
        rollout_tick_task.apply_async(**options)
    except Exception as exc:
        logger.warning("rollout %s: immediate tick not scheduled: %s", rollout_id, exc)


@shared_task(acks_late=True, ignore_result=True)
def pipeline_stage_start_task(pipeline_id: int, stage_index: int) -> None:
    """Start a pipeline's stage; a redelivery (stage started) does nothing."""
    from canary.services.pipelines import pipeline_stage_start
    from controlplane.audit.actors import CONTROLLER

    pipeline_stage_start(
        pipeline_id=int(pipeline_id), stage_index=int(stage_index), actor=CONTROLLER
    )
