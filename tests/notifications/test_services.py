"""Destination services: validated, audited, secrets never recorded or shown."""

from __future__ import annotations

import json

import pytest

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import InvalidInput
from controlplane.notifications import services
from controlplane.notifications.models import Destination


def _create(production, **kwargs):
    arguments = {
        "actor": SYSTEM,
        "name": "ops hook",
        "environment": production,
        "channel": "webhook",
        "url": "https://hooks.example.com/cp?token=abc",
        "kinds": ["flag_killed", "rollout_paused"],
    }
    arguments.update(kwargs)
    return services.destination_create(**arguments)


def test_destination_create__webhook__secret_returned_once_audited_without_it(
    production,
):
    # Given / When
    destination, secret = _create(production)
    # Then
    assert secret.startswith("whsec_") and len(secret) > 40
    assert destination.secret == secret
    event = AuditEvent.objects.get(action="notification_destination.created")
    assert event.target_id == str(destination.pk)
    assert event.environment == "production"
    assert event.after["kinds"] == ["rollout_paused", "flag_killed"]
    assert event.after["url"] == "https://hooks.example.com/cp"  # no query
    assert secret not in json.dumps(event.after)
    assert "token=abc" not in event.canonical


def test_destination_create__apprise__url_never_recorded(production):
    # Given / When
    destination, secret = _create(
        production, channel="apprise", url="slack://TokenA/TokenB/TokenC/#ops"
    )
    # Then
    assert secret == ""
    event = AuditEvent.objects.get(action="notification_destination.created")
    assert event.after["url"] == "slack://…"
    assert "TokenA" not in event.canonical
    assert destination.url_display == "slack://…"


@pytest.mark.parametrize(
    ("changes", "field", "fragment"),
    [
        ({"url": "ftp://example.com/x"}, "url", "http:// or https://"),
        ({"url": "javascript:alert(1)"}, "url", "http:// or https://"),
        ({"url": "https://exa\x00mple.com/"}, "url", "NUL"),
        ({"url": "https://example.com/" + "a" * 5000}, "url", "at most 2000"),
        ({"url": ""}, "url", "required"),
        ({"channel": "apprise", "url": "nosuchscheme://x"}, "url", "apprise"),
        ({"channel": "sms"}, "channel", "must be one of"),
        ({"kinds": ["rollout_exploded"]}, "kinds", "unknown rollout_exploded"),
        ({"kinds": "flag_killed"}, "kinds", "list"),
        ({"name": ""}, "name", "required"),
        ({"name": "x" * 101}, "name", "at most 100"),
        ({"name": "a\x00b"}, "name", "NUL"),
    ],
)
def test_destination_create__bad_input__field_error_nothing_written(
    production, changes, field, fragment
):
    # Given / When
    with pytest.raises(InvalidInput) as caught:
        _create(production, **changes)
    # Then
    assert caught.value.field == field
    assert fragment in caught.value.message
    assert Destination.objects.count() == 0
    assert not AuditEvent.objects.filter(
        action="notification_destination.created"
    ).exists()


def test_destination_create__same_name_same_env__refused(production):
    # Given
    _create(production)
    # When / Then
    with pytest.raises(InvalidInput) as caught:
        _create(production)
    assert caught.value.field == "name"


def test_destination_update__blank_url__kept_and_change_audited(production):
    # Given
    destination, _ = _create(production)
    # When
    updated = services.destination_update(
        actor=SYSTEM, destination=destination, url="", kinds=["flag_restored"]
    )
    # Then
    assert updated.url == "https://hooks.example.com/cp?token=abc"
    assert updated.kinds == ["flag_restored"]
    event = AuditEvent.objects.get(action="notification_destination.updated")
    assert event.before["kinds"] == ["rollout_paused", "flag_killed"]
    assert event.after["kinds"] == ["flag_restored"]
    assert event.details == {"url_changed": False}


def test_destination_update__nothing_changed__no_event(production):
    # Given
    destination, _ = _create(production)
    # When
    services.destination_update(actor=SYSTEM, destination=destination, name="ops hook")
    # Then
    assert not AuditEvent.objects.filter(
        action="notification_destination.updated"
    ).exists()


def test_destination_disable__audited(production):
    # Given
    destination, _ = _create(production)
    # When
    services.destination_disable(actor=SYSTEM, destination=destination)
    # Then
    destination.refresh_from_db()
    assert not destination.is_enabled
    event = AuditEvent.objects.get(action="notification_destination.updated")
    assert (event.before["is_enabled"], event.after["is_enabled"]) == (True, False)


def test_destination_rotate_secret__new_secret_audited_by_prefix_only(production):
    # Given
    destination, old = _create(production)
    # When
    new = services.destination_rotate_secret(actor=SYSTEM, destination=destination)
    # Then
    destination.refresh_from_db()
    assert new != old and destination.secret == new
    event = AuditEvent.objects.get(action="notification_destination.secret_rotated")
    assert event.after["secret"] == new[:6] + "…"
    assert new not in event.canonical and old not in event.canonical


def test_destination_rotate_secret__apprise__refused(production):
    # Given
    destination, _ = _create(production, channel="apprise", url="json://127.0.0.1/x")
    # When / Then
    with pytest.raises(InvalidInput) as caught:
        services.destination_rotate_secret(actor=SYSTEM, destination=destination)
    assert caught.value.field == "channel"
