"""Fixtures for the operator interfaces: a bool flag in production, pilot
merchants, and rollouts built through the services with an outcomes check
(no network needed)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from canary import services
from canary.models import Rollout
from controlplane.audit.actors import SYSTEM
from tests.sql_fixtures import sql_checks_on, sql_reader  # noqa: F401

PHASES: list[dict] = [
    {"name": "pilot", "target_type": "pilot", "pilot_merchants": ["m-1001"]},
    {"name": "10%", "target_type": "percentage", "percentage": 10},
    {"name": "50%", "target_type": "percentage", "percentage": 50},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
ERROR_RATE_CHECK: dict = {
    "name": "error_rate",
    "provider": "outcomes",
    "spec": {"metric": "error_rate"},
    "comparator": "lt",
    "threshold": 0.05,
    "min_samples": 1,
    "interval": 5,
}


@pytest.fixture
def merchants(merchant_factory) -> dict[str, Any]:
    return {key: merchant_factory(key) for key in ("m-1001", "m-1002", "m-1003")}


@pytest.fixture
def flag(production, flag_factory):
    return flag_factory("sequential_workflow", value_type="bool")


@pytest.fixture
def rollout_factory(flag, production, merchants) -> Callable[..., Rollout]:
    """Return make(started=False, phases=..., checks=...) -> a fresh rollout."""

    def make(
        *,
        started: bool = False,
        phases: list[dict] | None = None,
        checks: list[dict] | None = None,
        **kwargs: Any,
    ) -> Rollout:
        rollout = services.rollout_create(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            name=kwargs.pop("name", "ui test rollout"),
            phases=PHASES if phases is None else phases,
            checks=[ERROR_RATE_CHECK] if checks is None else checks,
            **kwargs,
        )
        if started:
            rollout = services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
        rollout.refresh_from_db()
        return rollout

    return make


def record(
    rollout: Rollout,
    verdict: str,
    value: float | None,
    *,
    check: str = "error_rate",
    message: str = "",
) -> None:
    """Record one measurement of ``check`` in the rollout's current phase."""
    rollout.refresh_from_db()
    row = rollout.checks.get(name=check)
    services.check_run_record(
        check_id=row.pk,
        phase_index=rollout.current_phase,
        value=value,
        verdict=verdict,
        detail={
            "message": message or f"value {value} vs < {row.threshold}",
            "threshold": row.threshold,
            "limit": row.threshold,
        },
    )


def run_to_completion(rollout: Rollout) -> Rollout:
    """Pass every phase with one passing measurement each, then complete."""
    for index in range(rollout.phases.count()):
        record(rollout, "pass", 0.01)
        rollout = services.rollout_advance(
            rollout_id=rollout.pk,
            expected_phase=index,
            actor=SYSTEM,
            reason="gates open",
        )
    rollout.refresh_from_db()
    return rollout
