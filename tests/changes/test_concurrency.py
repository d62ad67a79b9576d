"""Races on PostgreSQL: approvals and ticks in parallel apply a change once."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable

import pytest
from django.db import connection
from django.utils import timezone

from controlplane.audit.actors import Actor
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import DomainError
from flags.changes import gate, services
from flags.changes.models import ChangeRequestStatus, ScheduledChangeStatus

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


def _race(*calls: Callable[[], object]) -> list[object]:
    """Run ``calls`` in threads released together; return results or errors."""
    barrier = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(index: int, call: Callable[[], object]) -> None:
        try:
            barrier.wait()
            results[index] = call()
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[index] = exc
        finally:
            connection.close()

    threads = [
        threading.Thread(target=run, args=(i, call)) for i, call in enumerate(calls)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


def _who(name: str) -> Actor:
    return Actor(type="user", id=name, name=name)


def test_last_approvals_racing__applied_exactly_once(flag, production, alice):
    # Given: one approval needed, four reviewers approve at once
    services.approval_policy_set(actor=alice, environment=production, flag_state=1)
    change = gate.submit(
        actor=alice,
        operation="flag_state.percentage",
        arguments={
            "flag": "checkout_theme",
            "environment": "production",
            "percentage": 20,
        },
    ).change_request
    reviewers = [_who(f"r{i}") for i in range(4)]
    # When
    results = _race(
        *(
            lambda who=who: services.change_request_approve(
                change_request_id=change.pk, actor=who
            )
            for who in reviewers
        )
    )
    # Then
    change.refresh_from_db()
    assert change.status == ChangeRequestStatus.APPLIED
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert all(isinstance(r, DomainError) for r in results if isinstance(r, Exception))
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 1
    assert AuditEvent.objects.filter(action="change_request.applied").count() == 1


def test_two_approvals_of_two_needed_racing__applied_once(flag, production, alice):
    # Given
    services.approval_policy_set(actor=alice, environment=production, flag_state=2)
    change = services.change_request_create(
        actor=alice,
        operation="flag_state.serve",
        arguments={
            "flag": "checkout_theme",
            "environment": "production",
            "variation": "on",
        },
    )
    # When
    results = _race(
        lambda: services.change_request_approve(
            change_request_id=change.pk, actor=_who("bob")
        ),
        lambda: services.change_request_approve(
            change_request_id=change.pk, actor=_who("carol")
        ),
    )
    # Then
    assert not any(isinstance(r, Exception) for r in results)
    change.refresh_from_db()
    assert change.status == ChangeRequestStatus.APPLIED
    assert AuditEvent.objects.filter(action="flag_state.fallthrough_set").count() == 1


def test_two_workers_ticking__each_change_applied_once(flag, production, alice):
    # Given: five due changes of the same state
    changes = [
        services.scheduled_change_create(
            actor=alice,
            operation="flag_state.percentage",
            arguments={
                "flag": "checkout_theme",
                "environment": "production",
                "percentage": 10 * (i + 1),
            },
            run_at=timezone.now() + dt.timedelta(milliseconds=50 * (i + 1)),
        )
        for i in range(5)
    ]
    later = timezone.now() + dt.timedelta(seconds=5)
    # When
    results = _race(
        *(
            lambda: services.scheduled_changes_apply_due(
                actor=_who("worker"), now=later
            )
            for _ in range(3)
        )
    )
    # Then
    assert not any(isinstance(r, Exception) for r in results), results
    assert sum(results) == 5
    statuses = {
        c.status
        for c in type(changes[0]).objects.filter(pk__in=[c.pk for c in changes])
    }
    assert statuses == {ScheduledChangeStatus.APPLIED}
    assert AuditEvent.objects.filter(action="flag_state.percentage_set").count() == 5
    assert AuditEvent.objects.filter(action="scheduled_change.applied").count() == 5
