"""A pipeline through the real controller on a FakeClock, with real commits:
staging's last phase completes in a controller tick, the start task queued
on commit starts production, and further ticks complete it."""

from __future__ import annotations

import datetime as dt

from canary import clock
from canary.controller import controller_tick
from canary.models import Pipeline, PipelineStatus, RolloutStatus
from canary.services.pipelines import pipeline_start
from tests.canary.pipeline_helpers import (
    ALICE,
    PILOT,
    actions,
    make_pipeline,
    stage_rollout,
    stage_spec,
)

START = dt.datetime(2026, 12, 1, 6, 0, tzinfo=dt.UTC)


def _tick_until(pipeline: Pipeline, fake: clock.FakeClock, done) -> None:
    for _ in range(100):
        pipeline.refresh_from_db()
        if done(pipeline):
            return
        fake.advance(2)
        controller_tick()


def test_pipeline__controller_ticks__staging_then_production_completed(
    transactional_db, environments, flag_factory, merchant_factory
):
    # Given: a staging then production pipeline with one-second phases
    merchant_factory(PILOT)
    flag_factory("sequential_workflow")
    fake = clock.FakeClock(START)
    with clock.swapped(fake):
        pipeline = make_pipeline(
            flag="sequential_workflow",
            stages=[
                stage_spec("staging", duration_scale=0.05),
                stage_spec("production", duration_scale=0.05),
            ],
        )
        pipeline_start(pipeline_id=pipeline.pk, actor=ALICE)
        # When: the controller ticks until staging is done
        _tick_until(pipeline, fake, lambda p: p.current_stage == 1)
        # Then: production started by itself
        assert stage_rollout(pipeline, 0).status == RolloutStatus.COMPLETED
        assert stage_rollout(pipeline, 1).status in (
            RolloutStatus.RUNNING,
            RolloutStatus.COMPLETED,
        )
        # When: the controller goes on
        _tick_until(pipeline, fake, lambda p: p.is_terminal)
    # Then
    assert pipeline.status == PipelineStatus.COMPLETED
    assert stage_rollout(pipeline, 1).status == RolloutStatus.COMPLETED
    assert actions(pipeline) == [
        "pipeline.created",
        "pipeline.started",
        "pipeline.stage_completed",
        "pipeline.stage_started",
        "pipeline.completed",
    ]
