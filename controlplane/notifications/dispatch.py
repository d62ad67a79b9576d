"""The audit hook: an event that notifies becomes one delivery per destination.

Runs inside the change's transaction (``audit_recorded``): the delivery
rows commit or roll back with the change, so nothing is lost and nothing is
sent for a change that did not happen. Sending is queued with
``transaction.on_commit``, one task per delivery, so a slow or failing
destination holds up neither the change nor the other destinations.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.db import connections, transaction

from controlplane.audit.models import AuditEvent
from controlplane.notifications.conf import notify_setting
from controlplane.notifications.messages import ACTIONS, Notice, notice_for
from controlplane.notifications.models import Delivery, Destination

logger = logging.getLogger(__name__)


def deliveries_create(
    *, destinations: list[Destination], notice: Notice, event: AuditEvent | None
) -> list[Delivery]:
    """Create one pending delivery per destination; queue each after commit.

    Must run inside the transaction that made the change.
    """
    created = []
    for destination in destinations:
        delivery = Delivery.objects.create(
            destination=destination,
            kind=notice.kind,
            audit_event=event,
            message=notice.message,
            body=notice.body,
        )
        created.append(delivery)
        transaction.on_commit(
            lambda pk=delivery.pk: _queue(pk),
            robust=True,  # one destination's failure never stops the others
        )
    return created


def _queue(delivery_id: int) -> None:
    from controlplane.notifications.tasks import notification_deliver_task

    if notification_deliver_task.app.conf.task_always_eager and notify_setting(
        "NOTIFY_EAGER_IN_THREAD"
    ):
        # No broker (the zero-setup server): an eager task would run in the
        # request or the controller loop, which a slow destination would
        # hold up for its timeouts; a thread sends and waits the backoff.
        threading.Thread(
            target=_deliver_in_thread,
            args=(delivery_id,),
            name=f"notification-{delivery_id}",
            daemon=True,
        ).start()
        return
    notification_deliver_task.delay(delivery_id)


def _deliver_in_thread(delivery_id: int) -> None:
    from controlplane.notifications.delivery import delivery_attempt

    try:
        while (retry_in := delivery_attempt(delivery_id=delivery_id)) is not None:
            time.sleep(retry_in)
    except Exception:
        logger.exception("notifications: delivery %s stopped", delivery_id)
    finally:
        connections.close_all()


def on_audit_recorded(sender: Any, event: AuditEvent, **kwargs: Any) -> None:
    """Turn ``event`` into deliveries for the destinations subscribed to it.

    A problem here must never undo the change being audited (a kill switch
    above all), so the work runs in a savepoint and a failure is logged.
    """
    if event.action not in ACTIONS or not event.environment:
        return
    try:
        with transaction.atomic():
            candidates = list(
                Destination.objects.filter(
                    environment__key=event.environment, is_enabled=True
                )
            )
            if not candidates:
                return
            notice = notice_for(event)
            if notice is None:
                return
            subscribed = [d for d in candidates if notice.kind in (d.kinds or [])]
            deliveries_create(destinations=subscribed, notice=notice, event=event)
    except Exception:
        logger.exception(
            "notifications: audit event %s not turned into deliveries", event.pk
        )
