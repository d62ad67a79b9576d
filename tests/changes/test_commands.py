"""``manage.py change`` and ``manage.py schedule``, and the gated ``flag`` command."""

from __future__ import annotations

import datetime as dt
import io

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from controlplane.audit.models import AuditEvent
from flags import selectors
from flags.changes.models import ChangeRequest, ScheduledChange


def _run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def test_flag_percentage__policy__prints_change_request_then_approved(flag, production):
    # Given
    _run(
        "change",
        "policy",
        "--env",
        "production",
        "--flag-state",
        "1",
        "--actor",
        "alice",
    )
    # When
    sent = _run(
        "flag",
        "percentage",
        "checkout_theme",
        "20",
        "--env",
        "production",
        "--actor",
        "alice",
    )
    change = ChangeRequest.objects.get()
    with pytest.raises(CommandError, match="author cannot approve"):
        _run("change", "approve", str(change.pk), "--actor", "alice")
    approved = _run("change", "approve", str(change.pk), "--actor", "bob")
    listed = _run("change", "list")
    # Then
    assert f"change request {change.pk} created" in sent
    assert "needs 1 approval(s)" in sent
    assert "applied, 1/1 approvals" in approved
    assert "applied" in listed and "checkout_theme" in listed
    state = selectors.flag_state_get(flag=flag, environment=production)
    assert state.fallthrough["split"][0]["weight"] == 20_000


def test_change_request__key_value_arguments__created_and_cancelled(flag):
    # When
    created = _run(
        "change",
        "request",
        "flag_state.serve",
        "flag=checkout_theme",
        "environment=production",
        "variation=on",
        "--actor",
        "alice",
    )
    pk = ChangeRequest.objects.get().pk
    with pytest.raises(CommandError, match="only the author"):
        _run("change", "cancel", str(pk), "--actor", "bob")
    cancelled = _run("change", "cancel", str(pk), "--actor", "alice")
    # Then
    assert "created: pending, 0/1 approvals" in created
    assert "cancelled" in cancelled
    assert AuditEvent.objects.filter(action="change_request.cancelled").exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["change", "request", "flag_state.boom"], "unknown operation"),
        (["change", "request", "flag_state.serve", "novalue"], "KEY=VALUE"),
        (
            [
                "change",
                "request",
                "flag_state.percentage",
                "flag=checkout_theme",
                "environment=production",
                "percentage=1e999",
            ],
            "finite number",
        ),
        (["change", "approve", "99999999999999999999999"], "unknown change request"),
        (["change", "approve", "abc"], "not an id"),
        (
            [
                "schedule",
                "add",
                "flag_state.kill",
                "flag=checkout_theme",
                "environment=production",
                "--at",
                "2001-01-01T00:00Z",
            ],
            "must be in the future",
        ),
        (
            [
                "schedule",
                "add",
                "flag_state.kill",
                "flag=checkout_theme",
                "environment=production",
                "--at",
                "99999999999999d",
            ],
            "too far ahead",
        ),
        (
            [
                "schedule",
                "add",
                "flag_state.kill",
                "flag=checkout\x00theme",
                "environment=production",
                "--at",
                "1h",
            ],
            "NUL",
        ),
    ],
)
def test_commands__bad_input__one_line_error(flag, args, message):
    with pytest.raises(CommandError) as caught:
        _run(*args)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_schedule__add_list_tick_cancel(flag, production):
    # Given
    added = _run(
        "schedule",
        "add",
        "flag_state.percentage",
        "flag=checkout_theme",
        "environment=production",
        "percentage=45",
        "--at",
        "1h",
        "--actor",
        "alice",
    )
    later = _run(
        "schedule",
        "add",
        "flag_state.kill",
        "flag=checkout_theme",
        "environment=production",
        "--at",
        "2h",
    )
    first, second = ScheduledChange.objects.order_by("id")
    ScheduledChange.objects.filter(pk=first.pk).update(
        run_at=timezone.now() - dt.timedelta(seconds=1)
    )
    # When
    ticked = _run("schedule", "tick")
    cancelled = _run("schedule", "cancel", str(second.pk))
    listed = _run("schedule", "list")
    # Then
    assert "based on state version 1" in added and "scheduled change" in later
    assert "1 due change(s) processed" in ticked
    assert f"scheduled change {second.pk} cancelled" in cancelled
    assert "applied" in listed and "cancelled" in listed
    state = selectors.flag_state_get(flag=flag, environment=production)
    assert state.fallthrough["split"][0]["weight"] == 45_000 and state.killed_at is None
