"""Helpers of the pipeline tests: a staging -> production pipeline built
through the services, and stages driven to their end with rollout_advance."""

from __future__ import annotations

import socket
from typing import Any

from canary.models import Pipeline, PipelineStage, Rollout
from canary.services.pipelines import pipeline_create
from canary.services.releases import release_members
from canary.services.rollouts import rollout_advance
from controlplane.audit.actors import SYSTEM, Actor
from controlplane.audit.models import AuditEvent

ALICE = Actor(type="user", id="test:alice", name="alice")
BOB = Actor(type="user", id="test:bob", name="bob")
PILOT = "m-pilot"


def stage_spec(environment: str, **overrides: Any) -> dict:
    return {
        "environment": environment,
        "template": "demo-fast",
        "pilot_merchants": [PILOT],
        "checks": [],
        **overrides,
    }


def make_pipeline(
    *, flag: Any = None, flags: Any = None, actor: Actor = ALICE, **kwargs: Any
) -> Pipeline:
    stages = kwargs.pop("stages", [stage_spec("staging"), stage_spec("production")])
    return pipeline_create(
        actor=actor, flag=flag, flags=flags, stages=stages, name="ship it", **kwargs
    )


def stage(pipeline: Pipeline, index: int) -> PipelineStage:
    return PipelineStage.objects.get(pipeline=pipeline, index=index)


def stage_rollout(pipeline: Pipeline, index: int) -> Rollout:
    return Rollout.objects.get(pk=stage(pipeline, index).rollout_id)


def complete_rollout(rollout: Rollout) -> None:
    """Advance a running rollout through every phase to completed."""
    for index in range(rollout.phases.count()):
        rollout_advance(
            rollout_id=rollout.pk, expected_phase=index, actor=SYSTEM, reason="test"
        )


def complete_stage(pipeline: Pipeline, index: int) -> None:
    row = stage(pipeline, index)
    if row.rollout_id is not None:
        complete_rollout(Rollout.objects.get(pk=row.rollout_id))
        return
    members = release_members(row.release)
    for phase in range(members[0].phases.count()):
        for member in members:
            rollout_advance(
                rollout_id=member.pk, expected_phase=phase, actor=SYSTEM, reason="t"
            )


def actions(pipeline: Pipeline) -> list[str]:
    return list(
        AuditEvent.objects.filter(
            target_type="canary.pipeline", target_id=str(pipeline.pk)
        )
        .order_by("id")
        .values_list("action", flat=True)
    )


def closed_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/health"
