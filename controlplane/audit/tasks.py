"""Celery tasks of the audit log.

``audit_checkpoint_task`` runs from beat every ``AUDIT_CHECKPOINT_MINUTES``
(settings.py, ``audit-checkpoint``): it anchors the chain's head outside the
database, so events cut from the end or a rewritten chain are found by
``manage.py audit verify --against``.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def audit_checkpoint_task() -> dict | None:
    """Append the chain's head to the checkpoint file; return what was written.

    Return None when the chain has no event yet. A redelivery only appends
    one more (identical or later) anchor, which is harmless.
    """
    from controlplane.audit.checkpoints import audit_checkpoint_write

    checkpoint = audit_checkpoint_write()
    return (
        None if checkpoint is None else {"id": checkpoint.id, "hash": checkpoint.hash}
    )
