"""Make one attempt at a delivery and record what the destination answered.

The network call runs outside any transaction, so no row lock is held
while a destination is slow. Delivery rows are the log of sending, not
configuration: they are not audited (each attempt is a row of its own).
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from controlplane.notifications.conf import notify_setting
from controlplane.notifications.models import (
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
)
from controlplane.notifications.senders import Answer, send_apprise, send_webhook

FINAL = (DeliveryStatus.DELIVERED, DeliveryStatus.FAILED)


def backoff_seconds(attempt: int) -> float:
    """Return the wait after failed attempt number ``attempt`` (1-based)."""
    base = float(notify_setting("NOTIFY_RETRY_BACKOFF_SECONDS"))
    cap = float(notify_setting("NOTIFY_RETRY_BACKOFF_MAX_SECONDS"))
    return min(cap, base * 2 ** (attempt - 1))


def _send(delivery: Delivery) -> Answer:
    destination = delivery.destination
    if not destination.is_enabled:
        return Answer(False, 0.0, error="destination disabled")
    if destination.channel == Channel.WEBHOOK:
        return send_webhook(
            url=destination.url,
            secret=destination.secret,
            body=delivery.body,
            delivery_id=delivery.pk,
            kind=delivery.kind,
            timeout=float(notify_setting("NOTIFY_TIMEOUT_SECONDS")),
        )
    return send_apprise(
        url=destination.url, title="Control plane", body=delivery.message
    )


def delivery_attempt(*, delivery_id: int) -> float | None:
    """Try ``delivery`` once; return seconds until the next try, or None.

    None means there is nothing more to do: delivered, failed for good
    (``NOTIFY_MAX_ATTEMPTS`` reached, or the destination was disabled), or
    already final (a redelivered task is a no-op).
    """
    with transaction.atomic():
        delivery = (
            Delivery.objects.select_for_update(of=("self",))
            .select_related("destination")
            .filter(pk=delivery_id)
            .first()
        )
        if delivery is None or delivery.status in FINAL:
            return None
        number = delivery.attempts + 1
        delivery.attempts = number
        delivery.save(update_fields=["attempts"])
    started_at = timezone.now()
    answer = _send(delivery)  # outside the transaction: no lock held
    max_attempts = int(notify_setting("NOTIFY_MAX_ATTEMPTS"))
    retry_in: float | None = None
    with transaction.atomic():
        delivery = Delivery.objects.select_for_update().get(pk=delivery_id)
        DeliveryAttempt.objects.create(
            delivery=delivery,
            number=number,
            started_at=started_at,
            duration_ms=round(answer.duration_ms, 1),
            is_ok=answer.is_ok,
            status_code=answer.status_code,
            error=answer.error,
            answer=answer.answer,
        )
        fields = ["status", "last_error", "next_attempt_at"]
        delivery.last_error = answer.error
        delivery.next_attempt_at = None
        if answer.is_ok:
            delivery.status = DeliveryStatus.DELIVERED
            delivery.delivered_at = timezone.now()
            fields.append("delivered_at")
        elif number >= max_attempts or answer.error == "destination disabled":
            delivery.status = DeliveryStatus.FAILED
        else:
            retry_in = backoff_seconds(number)
            delivery.status = DeliveryStatus.RETRYING
            delivery.next_attempt_at = timezone.now() + dt.timedelta(seconds=retry_in)
        delivery.save(update_fields=fields)
    return retry_in


def deliveries_stale() -> list[int]:
    """Return the ids of unfinished deliveries whose task seems lost.

    A pending delivery older than ``NOTIFY_STALE_SECONDS``, or a retrying
    one that many seconds past its next attempt: its process stopped, or
    its task never reached a worker. Sending one again is safe: the
    receiver may see it twice at worst (``X-Controlplane-Delivery``).
    """
    cutoff = timezone.now() - dt.timedelta(
        seconds=float(notify_setting("NOTIFY_STALE_SECONDS"))
    )
    stale = Delivery.objects.filter(
        Q(status=DeliveryStatus.PENDING, created_at__lt=cutoff)
        | Q(status=DeliveryStatus.RETRYING, next_attempt_at__lt=cutoff)
    )
    return list(stale.order_by("pk").values_list("pk", flat=True)[:500])
