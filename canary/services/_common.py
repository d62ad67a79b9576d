"""Helpers shared by the rollout services (not part of the public API)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from canary.exceptions import InvalidInput, NotFound
from canary.models import Rollout, RolloutStatus
from canary.transitions import ACTIVE
from flags.models import Environment

Status = RolloutStatus
# Statuses in which a rollout owns its flag: no second rollout may start.
OWNS_FLAG = ACTIVE | {Status.ROLLING_BACK}


def lock_rollout(rollout_id: int) -> Rollout:
    # NO KEY UPDATE: recording a CheckRun (a key share on its rollout) does
    # not wait for, or deadlock with, a transition in progress.
    rollout = (
        Rollout.objects.select_for_update(no_key=True).filter(pk=rollout_id).first()
    )
    if rollout is None:
        raise NotFound(f"unknown rollout {rollout_id}", field="rollout")
    return rollout


def phase_running_time(rollout: Rollout, now: dt.datetime) -> float:
    """Return the seconds the current phase has spent running until ``now``.

    Time paused or awaiting approval does not count: that is what
    ``min_duration`` and ``max_duration`` measure.
    """
    seconds = rollout.phase_running_seconds or 0.0
    if rollout.phase_running_since is not None:
        seconds += max(0.0, (now - rollout.phase_running_since).total_seconds())
    return seconds


def env_key(rollout: Rollout) -> str:
    return (
        Environment.objects.filter(pk=rollout.environment_id)
        .values_list("key", flat=True)
        .get()
    )


def known_fields_object(
    raw: Any, allowed: set[str] | frozenset[str], prefix: str
) -> dict:
    """Return ``raw`` if it is an object with only ``allowed`` keys.

    Raise InvalidInput naming ``prefix`` (e.g. ``phases[2]``) or the first
    unknown key (``phases[2].colour``) otherwise.
    """
    if not isinstance(raw, dict):
        raise InvalidInput(f"{prefix}: must be an object", field=prefix)
    for key in raw:
        if key not in allowed:
            raise InvalidInput(
                f"{prefix}.{key}: unknown field (allowed: {', '.join(sorted(allowed))})",
                field=f"{prefix}.{key}",
            )
    return raw
