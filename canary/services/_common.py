"""Helpers shared by the rollout services (not part of the public API)."""
from __future__ import annotations

from canary.exceptions import NotFound
from canary.models import Rollout, RolloutStatus
from canary.transitions import ACTIVE
from flags.models import Environment

Status = RolloutStatus
# Statuses in which a rollout owns its flag: no second rollout may start.
OWNS_FLAG = ACTIVE | {Status.ROLLING_BACK}


def lock_rollout(rollout_id: int) -> Rollout:
    # NO KEY UPDATE: recording a CheckRun (a key share on its rollout) does
    # not wait for, or deadlock with, a transition in progress.
    rollout = Rollout.objects.select_for_update(no_key=True).filter(pk=rollout_id).first()
    if rollout is None:
        raise NotFound(f"unknown rollout {rollout_id}", field="rollout")
    return rollout


def env_key(rollout: Rollout) -> str:
    return Environment.objects.filter(pk=rollout.environment_id).values_list(
        "key", flat=True
    ).get()
