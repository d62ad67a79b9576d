"""Signed webhooks to a live receiver: signature, retries, isolation, rollback."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import transaction

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.notifications.models import Delivery, DeliveryStatus
from controlplane.notifications.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    verify,
)
from flags import services as flag_services
from flags.models import FlagState


def _delivery_callbacks(callbacks: list) -> list:
    """Return the on-commit callbacks that queue a delivery (not others')."""
    return [c for c in callbacks if "deliveries_create" in c.__qualname__]


def _kill(flag, environment, reason="broken CSS"):
    return flag_services.flag_state_kill(
        actor=SYSTEM, flag=flag, environment=environment, reason=reason
    )


def test_kill__webhook_destination__signed_body_delivered_after_commit(
    receiver, webhook_factory, flag, production, django_capture_on_commit_callbacks
):
    # Given
    destination, secret = webhook_factory(receiver.url + "/hooks/cp")
    # When
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _kill(flag, production)
        assert receiver.received == []  # nothing sent inside the transaction
    # Then
    assert len(_delivery_callbacks(callbacks)) == 1
    (request,) = receiver.received
    assert request.path == "/hooks/cp"
    assert verify(
        secret,
        request.headers[TIMESTAMP_HEADER],
        request.body,
        request.headers[SIGNATURE_HEADER],
    )
    assert abs(int(request.headers[TIMESTAMP_HEADER]) - time.time()) < 60
    body = request.json()
    event = AuditEvent.objects.get(action="flag_state.killed")
    assert body["kind"] == "flag_killed"
    assert body["flag"] == flag.key
    assert body["environment"] == "production"
    assert body["reason"] == "broken CSS"
    assert body["audit_event_id"] == event.pk
    assert body["message"] == (
        f"[production] flag {flag.key} killed in production: broken CSS"
    )
    state = FlagState.objects.get(flag=flag, environment=production)
    assert (
        body["link"]
        == f"https://cp.example.com/admin/flags/flagstate/{state.pk}/change/"
    )
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.audit_event_id == event.pk
    assert [
        (a.number, a.status_code, a.is_ok) for a in delivery.attempt_rows.all()
    ] == [(1, 200, True)]


def test_verify__wrong_secret_or_old_timestamp__rejected():
    # Given
    from controlplane.notifications.signing import sign

    body = '{"kind":"flag_killed"}'
    now = 1_800_000_000
    signature = sign("s3cret", now, body)
    # When / Then
    assert verify("s3cret", str(now), body, signature, now=now + 10)
    assert not verify("other", str(now), body, signature, now=now + 10)
    assert not verify("s3cret", str(now), body + " ", signature, now=now + 10)
    assert not verify("s3cret", str(now), body, signature, now=now + 301)
    assert not verify("s3cret", "soon", body, signature, now=now)


def test_deliver__receiver_500_twice_then_200__three_attempts_delivered(
    receiver_factory,
    webhook_factory,
    flag,
    production,
    django_capture_on_commit_callbacks,
):
    # Given
    receiver = receiver_factory(statuses=[500, 500, 200], answer_body=b"x" * 5000)
    webhook_factory(receiver.url)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        _kill(flag, production)
    # Then
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.DELIVERED
    assert delivery.attempts == 3
    attempts = list(delivery.attempt_rows.all())
    assert [(a.number, a.status_code, a.is_ok) for a in attempts] == [
        (1, 500, False),
        (2, 500, False),
        (3, 200, True),
    ]
    assert attempts[0].error.startswith("HTTP 500")
    assert all(len(a.answer) <= 300 for a in attempts)  # never the whole body
    assert all(a.duration_ms >= 0 for a in attempts)
    assert len(receiver.received) == 3
    # the same body each time, signed afresh
    assert len({r.body for r in receiver.received}) == 1


def test_deliver__always_500__failed_after_max_attempts(
    receiver_factory,
    webhook_factory,
    flag,
    production,
    django_capture_on_commit_callbacks,
):
    # Given
    receiver = receiver_factory(statuses=[503])
    webhook_factory(receiver.url)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        _kill(flag, production)
    # Then
    delivery = Delivery.objects.get()
    assert delivery.status == DeliveryStatus.FAILED
    assert delivery.attempts == 3
    assert delivery.last_error.startswith("HTTP 503")
    assert len(receiver.received) == 3


def test_deliver__one_destination_times_out_one_refuses__other_still_delivered(
    receiver_factory,
    webhook_factory,
    flag,
    production,
    django_capture_on_commit_callbacks,
):
    # Given: a slow receiver (past the 0.5 s timeout), a closed port, a good one
    slow = receiver_factory(delay=1.5)
    closed = receiver_factory()
    closed_url = closed.url
    closed.server.shutdown()
    closed.server.server_close()
    good = receiver_factory()
    webhook_factory(slow.url, name="slow")
    webhook_factory(closed_url, name="closed")
    webhook_factory(good.url, name="good")
    # When
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        _kill(flag, production)
    # Then
    assert len(_delivery_callbacks(callbacks)) == 3  # one task per destination
    by_name = {
        d.destination.name: d for d in Delivery.objects.select_related("destination")
    }
    assert by_name["good"].status == DeliveryStatus.DELIVERED
    assert len(good.received) == 1
    for name in ("slow", "closed"):
        assert by_name[name].status == DeliveryStatus.FAILED
        assert by_name[name].attempts == 3
    assert "Timeout" in by_name["slow"].last_error
    assert "ConnectionError" in by_name["closed"].last_error


def test_kill__transaction_rolled_back__nothing_recorded_or_sent(
    receiver, webhook_factory, flag, production, django_capture_on_commit_callbacks
):
    # Given
    webhook_factory(receiver.url)
    # When
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        with pytest.raises(RuntimeError):
            with transaction.atomic():
                _kill(flag, production)
                raise RuntimeError("the change fails after its audit event")
    # Then
    assert _delivery_callbacks(callbacks) == []
    assert Delivery.objects.count() == 0
    assert receiver.received == []
    assert FlagState.objects.get(flag=flag, environment=production).killed_at is None
    assert not AuditEvent.objects.filter(action="flag_state.killed").exists()


def test_kill__destination_not_subscribed_or_other_env_or_disabled__nothing_sent(
    receiver,
    webhook_factory,
    flag,
    production,
    environments,
    django_capture_on_commit_callbacks,
):
    # Given
    from controlplane.notifications import services

    webhook_factory(receiver.url, kinds=["rollout_paused"], name="paused only")
    webhook_factory(receiver.url, environment=environments["staging"], name="staging")
    disabled, _ = webhook_factory(receiver.url, name="disabled")
    services.destination_disable(actor=SYSTEM, destination=disabled)
    # When
    with django_capture_on_commit_callbacks(execute=True):
        _kill(flag, production)
    # Then
    assert Delivery.objects.count() == 0
    assert receiver.received == []


def test_deliver__redelivered_task__no_second_send(
    receiver, webhook_factory, flag, production, django_capture_on_commit_callbacks
):
    # Given
    from controlplane.notifications.tasks import notification_deliver_task

    webhook_factory(receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _kill(flag, production)
    delivery = Delivery.objects.get()
    # When
    notification_deliver_task.delay(delivery.pk)
    # Then
    delivery.refresh_from_db()
    assert delivery.attempts == 1
    assert len(receiver.received) == 1


def _wait_for(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.mark.django_db(transaction=True)
def test_kill__no_broker_thread_mode__change_returns_before_slow_destination(
    receiver_factory, webhook_factory, flag, production, settings
):
    # Given: the zero-setup default, a destination slower than one request
    settings.CONTROLPLANE = {**settings.CONTROLPLANE, "NOTIFY_EAGER_IN_THREAD": True}
    settings.CONTROLPLANE["NOTIFY_TIMEOUT_SECONDS"] = 5.0
    receiver = receiver_factory(delay=1.0)
    webhook_factory(receiver.url)
    # When
    _kill(flag, production)
    # Then: the kill committed and returned while the receiver still waits
    assert Delivery.objects.get().status == DeliveryStatus.PENDING
    assert _wait_for(lambda: Delivery.objects.get().status == DeliveryStatus.DELIVERED)
    assert len(receiver.received) == 1
    for thread in threading.enumerate():  # its connection closed before teardown
        if thread.name.startswith("notification-"):
            thread.join(timeout=10)


def _docs_receiver() -> dict:
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs/notifications.md").read_text()
    section = text.split("### Verifying it", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict = {}
    exec(compile(code, "docs/notifications.md", "exec"), namespace)  # noqa: S102
    return namespace


def test_docs_receiver_snippet__real_delivery__accepted_tampered_or_old_refused(
    receiver, webhook_factory, flag, production, django_capture_on_commit_callbacks
):
    # Given: the verification code of docs/notifications.md, as printed
    is_authentic = _docs_receiver()["is_authentic"]
    _, secret = webhook_factory(receiver.url)
    with django_capture_on_commit_callbacks(execute=True):
        _kill(flag, production)
    (request,) = receiver.received
    raw = request.body.encode()
    # When / Then
    assert is_authentic(secret, request.headers, raw)
    assert not is_authentic("whsec_other", request.headers, raw)
    assert not is_authentic(secret, request.headers, raw.replace(b"broken", b"fixed"))
    old = dict(request.headers)
    old[TIMESTAMP_HEADER] = str(int(old[TIMESTAMP_HEADER]) - 301)
    assert not is_authentic(secret, old, raw)


def test_resume_stale__lost_pending_delivery__sent_by_beat_task(
    receiver, webhook_factory, flag, production
):
    # Given: a delivery whose task never ran (no on_commit executed here)
    import datetime as dt

    from django.utils import timezone

    from controlplane.notifications.tasks import notifications_resume_stale_task

    webhook_factory(receiver.url)
    _kill(flag, production)
    fresh = notifications_resume_stale_task.delay().get()
    # the test arranges the age of the row; no service ages a delivery
    Delivery.objects.update(created_at=timezone.now() - dt.timedelta(minutes=10))
    # When
    resumed = notifications_resume_stale_task.delay().get()
    # Then
    assert (fresh, resumed) == (0, 1)
    assert Delivery.objects.get().status == DeliveryStatus.DELIVERED
    assert len(receiver.received) == 1
