"""Celery tasks of the flags app: thin wrappers over services."""

from celery import shared_task


@shared_task(acks_late=True)
def overrides_purge_expired_task() -> int:
    """Remove overrides past their expiry (one audited removal each)."""
    from controlplane.audit.actors import SYSTEM
    from flags import services

    return services.overrides_purge_expired(actor=SYSTEM)
