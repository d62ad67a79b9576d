"""Celery task: one delivery, retried with exponential backoff."""

from __future__ import annotations

from celery import shared_task


@shared_task(bind=True, acks_late=True, max_retries=None, ignore_result=True)
def notification_deliver_task(self, delivery_id: int) -> None:
    """Attempt one delivery; schedule the next attempt while it may succeed.

    The attempt count lives in the delivery row (``NOTIFY_MAX_ATTEMPTS``),
    not in Celery's retry counter, so the loop ends after at most that many
    attempts. With a worker, the next attempt is a Celery retry after the
    backoff; in eager mode (no broker, tests) it runs at once in process,
    since Celery's eager retry raises under ``task_eager_propagates``.
    """
    from controlplane.notifications.delivery import delivery_attempt

    while (retry_in := delivery_attempt(delivery_id=delivery_id)) is not None:
        if not self.request.is_eager:
            raise self.retry(countdown=retry_in)


@shared_task(ignore_result=True, expires=60)
def notifications_resume_stale_task() -> int:
    """Queue again the deliveries whose task seems lost (beat, every minute)."""
    from controlplane.notifications.delivery import deliveries_stale

    stale = deliveries_stale()
    for delivery_id in stale:
        notification_deliver_task.delay(delivery_id)
    return len(stale)
