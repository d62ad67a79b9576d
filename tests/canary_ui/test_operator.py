"""Operator services: the preflight before start and the checks of a draft."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from canary import services
from canary.models import OutcomeEvent, RolloutStatus
from canary.services import PreflightFailed
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import Conflict, InvalidInput

RELATIVE_CHECK = {
    "name": "p95",
    "provider": "outcomes",
    "spec": {"metric": "p95_ms"},
    "mode": "relative",
    "comparator": "lt",
    "relative_tolerance": 0.2,
}


def events(rollout, n: int, ms: float) -> None:
    now = timezone.now()
    OutcomeEvent.objects.bulk_create(
        [
            OutcomeEvent(
                flag_key=rollout.flag.key,
                environment=rollout.environment,
                merchant_key="m-1001",
                variation="on",
                outcome="success",
                duration_ms=ms,
                occurred_at=now - dt.timedelta(seconds=1 + i),
            )
            for i in range(n)
        ]
    )


def test_rollout_start_checked__relative_check_with_data__baseline_recorded(
    rollout_factory,
):
    # Given
    rollout = rollout_factory(checks=[RELATIVE_CHECK])
    events(rollout, 20, 150.0)
    # When
    rollout, report = services.rollout_start_checked(
        rollout_id=rollout.pk, actor=SYSTEM
    )
    # Then
    assert rollout.status == RolloutStatus.RUNNING
    assert report.baseline == {"p95": 150.0}
    rollout.refresh_from_db()
    assert rollout.baseline == {"p95": 150.0}


def test_rollout_start_checked__relative_check_without_data__refused(rollout_factory):
    # Given
    rollout = rollout_factory(checks=[RELATIVE_CHECK])
    # When
    with pytest.raises(PreflightFailed) as refused:
        services.rollout_start_checked(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    assert "check p95 is relative to a baseline" in refused.value.message
    assert refused.value.as_dict()["preflight"]["ok"] is False
    rollout.refresh_from_db()
    assert rollout.status == RolloutStatus.DRAFT
    assert not AuditEvent.objects.filter(action="rollout.transition").exists()


def test_rollout_preflight__level_2_deployment_without_previous__refused(
    rollout_factory, production
):
    # Given
    from rollback.services import deployment_record

    deployment = deployment_record(
        actor=SYSTEM,
        service="orders",
        environment=production,
        version="1.0",
        migration_state={},
    )
    rollout = rollout_factory(
        deployment=deployment.pk,
        checks=[
            {
                "name": "errors",
                "provider": "outcomes",
                "spec": {"metric": "error_rate"},
                "threshold": 0.05,
                "on_failure": "rollback_2",
            }
        ],
    )
    # When
    report = services.rollout_preflight(rollout_id=rollout.pk)
    # Then
    assert not report.ok
    assert any(
        p.startswith("rollback level 2 impossible: deployment")
        and "no previous deployment" in p
        for p in report.problems
    )
    assert report.rollback["1"]["possible"] is True


def test_rollout_preflight__running_rollout__not_a_draft(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When
    report = services.rollout_preflight(rollout_id=rollout.pk)
    # Then
    assert report.problems == [f"rollout {rollout.pk} is running, not draft"]


def test_rollout_start_checked__already_running__unchanged(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    version = rollout.version
    # When
    again, _ = services.rollout_start_checked(rollout_id=rollout.pk, actor=SYSTEM)
    # Then
    assert again.status == RolloutStatus.RUNNING and again.version == version


def test_health_check_update__no_change__no_event(rollout_factory):
    # Given
    rollout = rollout_factory()
    check = rollout.checks.get()
    # When
    services.health_check_update(
        actor=SYSTEM,
        rollout_id=rollout.pk,
        check_id=check.pk,
        changes={"threshold": check.threshold},
    )
    # Then
    assert not AuditEvent.objects.filter(action="check.updated").exists()


def test_health_check_update__bad_value__field_error_unchanged(rollout_factory):
    # Given
    rollout = rollout_factory()
    check = rollout.checks.get()
    # When
    with pytest.raises(InvalidInput) as error:
        services.health_check_update(
            actor=SYSTEM,
            rollout_id=rollout.pk,
            check_id=check.pk,
            changes={"failure_limit": -1},
        )
    # Then
    assert error.value.field == "failure_limit"
    check.refresh_from_db()
    assert check.failure_limit == 0


def test_health_check_delete__started__conflict(rollout_factory):
    # Given
    rollout = rollout_factory(started=True)
    # When / Then
    with pytest.raises(Conflict, match="only while it is a draft"):
        services.health_check_delete(
            actor=SYSTEM, rollout_id=rollout.pk, check_id=rollout.checks.get().pk
        )
