"""``manage.py audit verify|export``."""

from __future__ import annotations

import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import services


def run(*args: str) -> str:
    out = io.StringIO()
    call_command("audit", *args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


@pytest.fixture
def events(environments, flag_factory, merchant_factory):
    """A handful of real events written by the services."""
    flag_factory("sequential_workflow")
    merchant_factory("m-1001")
    return list(AuditEvent.objects.order_by("id"))


def tamper(event_id: int, action: str) -> None:
    """Edit one event behind the model's back, as an attacker with SQL would."""
    table = connection.ops.quote_name(AuditEvent._meta.db_table)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # Bypass the append-only trigger for this session only.
            cursor.execute("SET session_replication_role = replica")
        cursor.execute(
            f"UPDATE {table} SET action = %s WHERE id = %s", [action, event_id]
        )
        if connection.vendor == "postgresql":
            cursor.execute("SET session_replication_role = DEFAULT")


def test_audit_verify__intact_chain__ok_with_count(events):
    # When
    out = run("verify")
    # Then
    assert out.strip() == f"OK: {len(events)} events verified"


def test_audit_verify__tampered_event__fails_naming_it(events):
    # Given
    victim = events[2]
    tamper(victim.pk, "flag.deleted")
    # When
    with pytest.raises(CommandError) as raised:
        run("verify")
    # Then
    message = str(raised.value)
    assert f"event {victim.pk}:" in message
    assert "edited" in message
    assert "2 events before it verified" in message
    assert "\n" not in message


def test_audit_export__since_a_time__only_later_events(events, merchant_factory):
    # Given
    cut = timezone.now()
    later = merchant_factory("m-2002")
    # When
    out = run("export", "--since", cut.isoformat())
    # Then
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["target"]["id"] for line in lines] == [str(later.pk)]
    assert lines[0]["action"] == "merchant.created"
    assert set(lines[0]) >= {
        "id",
        "created_at",
        "actor",
        "before",
        "after",
        "hash",
        "prev_hash",
    }


def test_audit_export__relative_since__all_recent_events_oldest_first(events):
    # When
    out = run("export", "--since", "24h")
    # Then
    ids = [json.loads(line)["id"] for line in out.splitlines()]
    assert ids == [event.pk for event in events]


def test_audit_export__output_file__json_lines_written(events, tmp_path):
    # Given
    target = tmp_path / "audit.jsonl"
    # When
    run("export", "--output", str(target))
    # Then
    lines = target.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["hash"] for line in lines] == [
        event.hash for event in events
    ]


@pytest.mark.parametrize("since", ["yesterday", "24x", "2026-13-01"])
def test_audit_export__bad_since__one_line_error(events, since):
    # When
    with pytest.raises(CommandError) as raised:
        run("export", "--since", since)
    # Then
    assert "--since" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_audit_verify__after_more_changes__still_ok(events, production, system_actor):
    # Given
    from flags.models import Flag

    flag = Flag.objects.get(key="sequential_workflow")
    services.flag_state_kill(actor=system_actor, flag=flag, environment=production)
    # When
    out = run("verify")
    # Then
    assert out.strip() == f"OK: {len(events) + 1} events verified"
