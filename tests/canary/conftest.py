"""Canary fixtures: a bool flag in production, merchants, rollouts built
through the services and driven to any status."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from canary import services
from canary.models import Rollout, RolloutStatus
from controlplane.audit.actors import SYSTEM

Status = RolloutStatus

DEFAULT_PHASES: list[dict] = [
    {"name": "pilot", "target_type": "pilot", "pilot_merchants": ["m-pilot"]},
    {"name": "10%", "target_type": "percentage", "percentage": 10},
    {"name": "50%", "target_type": "percentage", "percentage": 50},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
DEFAULT_CHECKS: list[dict] = [
    {
        "name": "error_rate",
        "provider": "prometheus",
        "spec": {"query": "vector(0)"},
        "comparator": "lt",
        "threshold": 0.01,
        "min_samples": 1,
    },
]


@pytest.fixture
def merchants(merchant_factory) -> dict[str, Any]:
    # Only pilots need registry rows: evaluation takes any merchant key.
    keys = ["m-pilot", "m-pilot-2"]
    return {key: merchant_factory(key) for key in keys}


@pytest.fixture
def flag(production, flag_factory):
    return flag_factory("sequential_workflow")


def _drive(rollout: Rollout, status: str) -> Rollout:
    """Move a draft along the shortest path to ``status``."""
    paths: dict[str, list[str]] = {
        Status.DRAFT: [],
        Status.RUNNING: [Status.RUNNING],
        Status.PAUSED: [Status.RUNNING, Status.PAUSED],
        Status.AWAITING_APPROVAL: [Status.RUNNING, Status.AWAITING_APPROVAL],
        Status.COMPLETED: [Status.RUNNING, Status.COMPLETED],
        Status.ROLLING_BACK: [Status.RUNNING, Status.ROLLING_BACK],
        Status.ROLLED_BACK: [Status.RUNNING, Status.ROLLING_BACK, Status.ROLLED_BACK],
        Status.ABORTED: [Status.ABORTED],
    }
    for step in paths[status]:
        if step == Status.RUNNING:
            rollout = services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
        else:
            rollout = services.rollout_transition(
                rollout_id=rollout.pk, to=step, actor=SYSTEM, reason="test setup"
            )
    return rollout


@pytest.fixture
def rollout_factory(flag, production, merchants) -> Callable[..., Rollout]:
    def make(
        status: str = Status.DRAFT,
        *,
        phases: list[dict] | None = None,
        checks: list[dict] | None = None,
        **kwargs: Any,
    ) -> Rollout:
        rollout = services.rollout_create(
            actor=SYSTEM,
            flag=kwargs.pop("flag", flag),
            environment=kwargs.pop("environment", production),
            name=kwargs.pop("name", "test rollout"),
            phases=DEFAULT_PHASES if phases is None else phases,
            checks=DEFAULT_CHECKS if checks is None else checks,
            **kwargs,
        )
        rollout = _drive(rollout, status)
        rollout.refresh_from_db()
        return rollout

    return make
