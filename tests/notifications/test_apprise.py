"""apprise destinations through real apprise URLs that hit a local receiver."""

from __future__ import annotations

from urllib.parse import parse_qs

from controlplane.audit.actors import SYSTEM
from controlplane.notifications import services
from controlplane.notifications.models import Delivery, DeliveryStatus, Kind
from flags import services as flag_services


def _apprise_destination(production, url: str):
    destination, secret = services.destination_create(
        actor=SYSTEM,
        name="team chat",
        environment=production,
        channel="apprise",
        url=url,
        kinds=[Kind.FLAG_KILLED, Kind.FLAG_RESTORED],
    )
    assert secret == ""
    return destination


def test_kill_and_restore__apprise_json_url__both_delivered(
    receiver, flag, production, django_capture_on_commit_callbacks
):
    # Given
    _apprise_destination(production, receiver.url.replace("http", "json") + "/chat")
    # When
    with django_capture_on_commit_callbacks(execute=True):
        flag_services.flag_state_kill(
            actor=SYSTEM, flag=flag, environment=production, reason="broken CSS"
        )
    with django_capture_on_commit_callbacks(execute=True):
        flag_services.flag_state_restore(
            actor=SYSTEM, flag=flag, environment=production
        )
    # Then
    assert [r.path for r in receiver.received] == ["/chat", "/chat"]
    messages = [r.json()["message"] for r in receiver.received]
    assert messages[0].startswith(
        f"[production] flag {flag.key} killed in production: broken CSS"
    )
    assert messages[1].startswith(f"[production] flag {flag.key} restored")
    assert receiver.received[0].json()["title"] == "Control plane"
    statuses = list(Delivery.objects.values_list("status", "attempts"))
    assert statuses == [(DeliveryStatus.DELIVERED, 1)] * 2


def test_kill__apprise_form_url__delivered(
    receiver, flag, production, django_capture_on_commit_callbacks
):
    # Given
    _apprise_destination(production, receiver.url.replace("http", "form") + "/f")
    # When
    with django_capture_on_commit_callbacks(execute=True):
        flag_services.flag_state_kill(
            actor=SYSTEM, flag=flag, environment=production, reason="x"
        )
    # Then
    (request,) = receiver.received
    assert "killed" in parse_qs(request.body)["message"][0]
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED


def test_kill__apprise_receiver_500__retried_then_failed_with_error(
    receiver_factory, flag, production, django_capture_on_commit_callbacks
):
    # Given
    receiver = receiver_factory(statuses=[500])
    _apprise_destination(production, receiver.url.replace("http", "json"))
    # When
    with django_capture_on_commit_callbacks(execute=True):
        flag_services.flag_state_kill(
            actor=SYSTEM, flag=flag, environment=production, reason="x"
        )
    # Then
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert len(receiver.received) == 3
    attempts = list(delivery.attempt_rows.all())
    assert [a.is_ok for a in attempts] == [False, False, False]
    assert all(a.error and len(a.error) <= 300 for a in attempts)
