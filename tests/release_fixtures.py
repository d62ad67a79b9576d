"""Releases built through the services for the interface tests: two bool
flags in production, an outcomes check recorded by hand, and a helper
that drives every member through every phase (no network, no controller)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from canary import services
from canary.models import Release, Rollout
from canary.services.releases import release_create, release_members, release_start
from controlplane.audit.actors import SYSTEM

KEYS = ["queue_ai_enrichment", "analytics_forecasting"]
PHASES: list[dict] = [
    {"name": "pilot", "target_type": "pilot", "pilot_merchants": ["m-1001"]},
    {"name": "50%", "target_type": "percentage", "percentage": 50},
    {"name": "100%", "target_type": "percentage", "percentage": 100},
]
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

    def make(*, started: bool = False, name: str = "checkout bundle") -> Release:
        release = release_create(
            actor=SYSTEM,
            environment=production,
            flags=release_flags,
            phases=PHASES,
            checks=[CHECK],
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
