"""The baselines a rollout compares with: the values measured before start
(relative checks) and the per-merchant windows captured at start (compare
checks)."""

from __future__ import annotations

import math
from typing import Any

from canary import clock
from canary.exceptions import Conflict, InvalidInput
from canary.models import CheckMode, Rollout
from canary.services._common import Status, env_key, lock_rollout
from controlplane.audit.services import audited_transaction, record_audit_event


def rollout_set_baseline(
    *, rollout_id: int, actor: Any, baseline: dict[str, float]
) -> Rollout:
    """Record the values measured before start, per check name (relative
    mode compares with them). Only for a draft; unknown names are refused."""
    if not isinstance(baseline, dict):
        raise InvalidInput(
            "baseline: must be an object of check name -> value", field="baseline"
        )
    with audited_transaction():
        rollout = lock_rollout(rollout_id)
        if rollout.status != Status.DRAFT:
            raise Conflict(
                f"rollout {rollout.pk} is {rollout.status}: the baseline is fixed "
                "once it starts",
                field="baseline",
            )
        names = set(rollout.checks.values_list("name", flat=True))
        for key, value in baseline.items():
            if key not in names:
                raise InvalidInput(
                    f"baseline.{key}: no check of that name", field=f"baseline.{key}"
                )
            if value is not None and (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not math.isfinite(value)
            ):
                raise InvalidInput(
                    f"baseline.{key}: must be a number", field=f"baseline.{key}"
                )
        before = dict(rollout.baseline or {})
        rollout.baseline = {**before, **baseline}
        rollout.version += 1
        rollout.save(update_fields=["baseline", "version", "updated_at"])
        record_audit_event(
            actor=actor,
            action="rollout.baseline_set",
            target=rollout,
            environment=env_key(rollout),
            before=before,
            after=rollout.baseline,
        )
    return rollout


def merchant_baseline_for(rollout_id: int) -> dict | None:
    """Capture the merchant baselines a draft's compare checks need (None:
    not a draft, or no compare check)."""
    from canary.baselines import merchant_baseline_capture

    rollout = (
        Rollout.objects.select_related("flag", "environment")
        .filter(pk=rollout_id, status=Status.DRAFT)
        .first()
    )
    if rollout is None or not rollout.checks.filter(mode=CheckMode.COMPARE).exists():
        return None
    return merchant_baseline_capture(
        environment_key=rollout.environment.key,
        flag_key=rollout.flag.key,
        control_variation=rollout.control_variation,
        now=clock.now(),
    )


def baseline_summary(merchant_baseline: dict | None) -> dict:
    """Return what the start event says of the captured baselines."""
    if merchant_baseline is None:
        return {}
    summary = {k: merchant_baseline[k] for k in ("since", "until", "seconds", "events")}
    return {
        "merchant_baseline": {
            **summary,
            "merchants": len(merchant_baseline["merchants"]),
        }
    }
