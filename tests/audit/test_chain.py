"""The audit log: hash chain verification and append-only enforcement."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator

import pytest
from django.db import DatabaseError, connection, transaction

from controlplane.audit.models import AuditEvent, AuditLogImmutable
from controlplane.audit.services import audit_chain_verify
from flags import services


@pytest.fixture
def chain(environments, flag_factory, merchant_factory, actor) -> list[AuditEvent]:
    """A few real events written by the services, oldest first."""
    flag = flag_factory("sequential_workflow")
    merchant = merchant_factory("m-pilot")
    services.flag_state_set_percentage(
        actor=actor, flag=flag, environment=environments["production"], percentage=10
    )
    services.override_set(
        actor=actor,
        flag=flag,
        environment=environments["production"],
        merchant=merchant,
        variation="on",
    )
    return list(AuditEvent.objects.order_by("id"))


@contextlib.contextmanager
def triggers_off() -> Iterator[None]:
    """Let raw SQL past the append-only trigger (PostgreSQL), as an attacker with
    superuser rights could; a no-op elsewhere."""
    if connection.vendor != "postgresql":
        yield
        return
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("RESET session_replication_role")


def raw_update_after(event_id: int, after: dict) -> None:
    cast = "::jsonb" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE audit_auditevent SET after = %s{cast} WHERE id = %s",
            [json.dumps(after), event_id],
        )


def raw_delete(event_id: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM audit_auditevent WHERE id = %s", [event_id])


def test_audit_chain_verify__fresh_chain__ok(chain):
    # Given / When
    report = audit_chain_verify()
    # Then
    assert len(chain) >= 6
    assert (report.ok, report.checked, report.broken_id) == (True, len(chain), None)


def test_audit_chain_verify__small_chunks__same_result(chain):
    # Given / When
    report = audit_chain_verify(chunk_size=2)
    # Then
    assert (report.ok, report.checked) == (True, len(chain))


def test_audit_chain_verify__tampered_after__names_that_event(chain):
    # Given
    victim = chain[len(chain) // 2]
    with triggers_off():
        raw_update_after(victim.pk, {"enabled": True, "tampered": True})
    # When
    report = audit_chain_verify()
    # Then
    assert not report.ok
    assert report.broken_id == victim.pk
    assert report.checked == chain.index(victim)
    assert "edited" in report.problem


def test_audit_chain_verify__middle_event_deleted__detected_at_next(chain):
    # Given
    victim, successor = chain[2], chain[3]
    with triggers_off():
        raw_delete(victim.pk)
    # When
    report = audit_chain_verify()
    # Then
    assert not report.ok
    assert report.broken_id == successor.pk
    assert "removed" in report.problem


def test_audit_event__save_existing__refused(chain):
    # Given
    event = chain[0]
    event.action = "flag.rewritten"
    # When / Then
    with pytest.raises(AuditLogImmutable):
        event.save()
    assert AuditEvent.objects.get(pk=event.pk).action != "flag.rewritten"


def test_audit_event__delete__refused(chain):
    # Given / When / Then
    with pytest.raises(AuditLogImmutable):
        chain[0].delete()
    assert AuditEvent.objects.count() == len(chain)


@pytest.mark.parametrize("operation", ["update", "delete"])
def test_audit_event_queryset__bulk_change__refused(chain, operation):
    # Given
    events = AuditEvent.objects.all()
    # When / Then
    with pytest.raises(AuditLogImmutable):
        if operation == "update":
            events.update(action="x")
        else:
            events.delete()
    assert audit_chain_verify().ok


@pytest.mark.postgres
@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_auditevent SET action = 'x' WHERE id = %s",
        "DELETE FROM audit_auditevent WHERE id = %s",
    ],
)
def test_audit_table__raw_sql_change__refused_by_trigger(chain, statement):
    # Given
    event = chain[1]
    # When
    with pytest.raises(DatabaseError) as error:
        with transaction.atomic():  # a savepoint keeps the test transaction usable
            with connection.cursor() as cursor:
                cursor.execute(statement, [event.pk])
    # Then
    assert "append-only" in str(error.value)
    assert AuditEvent.objects.filter(pk=event.pk, action=event.action).exists()
    assert audit_chain_verify().ok
