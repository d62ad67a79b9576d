"""Releases built through the services for the interface tests: two bool
flags in production, an outcomes check recorded by hand, and a helper
that drives every member through every phase (no network, no controller)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import TestCase

from canary import services
from canary.models import Release, Rollout
from canary.services.releases import (
    release_create,
    release_members,
    release_roll_back,
    release_start,
)
from controlplane.audit.actors import SYSTEM

KEYS = ["queue_ai_enrichment", "analytics_forecasting"]
PHASES: list[dict] = [
    {"name": "pilot", "target_type": "pilot", "pilot_merchants": ["m-1001"]},
    {"name": "50%", "target_type": "percentage", "percentage": 50},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
COMPARE_CHECK: dict = {
    "name": "error_rate_vs_control",
    "provider": "outcomes",
    "mode": "compare",
    "spec": {"metric": "error_rate"},
    "margin": 0.02,
    "interval": 5,
}
CHECK: dict = {
    "name": "error_rate",
    "provider": "outcomes",
    "spec": {"metric": "error_rate"},
    "comparator": "lt",
    "threshold": 0.05,
    "min_samples": 1,
    "interval": 5,
}


@pytest.fixture
def release_flags(production, flag_factory, merchant_factory) -> list[str]:
    for key in ("m-1001", "m-1002"):
        merchant_factory(key)
    for key in KEYS:
        flag_factory(key, value_type="bool")
    return KEYS


@pytest.fixture
def release_factory(release_flags, production) -> Callable[..., Release]:
    """Return make(started=False, name=...) -> a fresh release of KEYS."""

    def make(
        *,
        started: bool = False,
        name: str = "checkout bundle",
        checks: list[dict] | None = None,
    ) -> Release:
        release = release_create(
            actor=SYSTEM,
            environment=production,
            flags=release_flags,
            phases=PHASES,
            checks=[CHECK] if checks is None else checks,
            name=name,
        )
        if started:
            release = release_start(release_id=release.pk, actor=SYSTEM)
        release.refresh_from_db()
        return release

    return make


def _record_pass(rollout: Rollout) -> None:
    rollout.refresh_from_db()
    check = rollout.checks.get(name=CHECK["name"])
    services.check_run_record(
        check_id=check.pk,
        phase_index=rollout.current_phase,
        value=0.01,
        verdict="pass",
        detail={"message": "value 0.01 vs < 0.05", "threshold": 0.05},
    )


def record_comparison(
    rollout: Rollout, *, decision: str, estimate: float, lower: float, upper: float
) -> None:
    """Record one comparison of the compare check in the current phase."""
    rollout.refresh_from_db()
    check = rollout.checks.get(name=COMPARE_CHECK["name"])
    services.check_run_record(
        check_id=check.pk,
        phase_index=rollout.current_phase,
        value=estimate,
        verdict="fail" if decision == "worse" else "pass",
        detail={
            "message": f"{decision}: {estimate:+.3f} [{lower:+.3f}, {upper:+.3f}]",
            "comparison": {
                "metric": "error_rate",
                "decision": decision,
                "estimate": estimate,
                "lower": lower,
                "upper": upper,
                "margin": COMPARE_CHECK["margin"],
                "treated_merchants": 20,
                "control_merchants": 20,
            },
        },
    )


def release_partly_rolled_back(release: Release) -> Release:
    """In phase 2, the second flag says worse and is rolled back alone (as
    the controller would), then the first one completes: a completed
    release with one feature rolled back and estimates for both."""
    keep, bad = release_members(release)
    for member in (keep, bad):
        _record_pass(member)
        services.rollout_advance(
            rollout_id=member.pk, expected_phase=0, actor=SYSTEM, reason="gates open"
        )
    record_comparison(
        keep, decision="not_worse", estimate=0.001, lower=-0.004, upper=0.006
    )
    record_comparison(bad, decision="worse", estimate=0.09, lower=0.05, upper=0.13)
    reason = f"{bad.flag.key}: error_rate_vs_control worse (+0.09)"
    # The rollback run executes after commit (in process in tests).
    with TestCase.captureOnCommitCallbacks(execute=True):
        release_roll_back(
            release_id=release.pk,
            actor=SYSTEM,
            flags=[bad.flag.key],
            on_failure="rollback_1",
            attribution={
                "scope": "partial",
                "flags": [bad.flag.key],
                "reason": reason,
                "evidence": {},
            },
            reasons={bad.flag.key: reason},
        )
    # The controller records the end of the (succeeded) rollback run.
    services.rollout_rollback_finished(rollout_id=bad.pk, actor=SYSTEM, succeeded=True)
    for index in (1, 2):
        _record_pass(keep)
        services.rollout_advance(
            rollout_id=keep.pk, expected_phase=index, actor=SYSTEM, reason="gates open"
        )
    release.refresh_from_db()
    return release


def release_complete(release: Release) -> Release:
    """Pass and advance every member through every phase, in lockstep."""
    for index in range(len(PHASES)):
        for member in release_members(release):
            _record_pass(member)
            services.rollout_advance(
                rollout_id=member.pk,
                expected_phase=index,
                actor=SYSTEM,
                reason="gates open",
            )
    release.refresh_from_db()
    return release
