"""Celery tasks of the audit log.

``audit_checkpoint_task`` runs from beat every ``AUDIT_CHECKPOINT_MINUTES``
(settings.py, ``audit-checkpoint``): it anchors the head of every chain
outside the database, so events cut from the end or a rewritten chain are
found by ``manage.py audit verify --against``.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(ignore_result=True)
def audit_checkpoint_task() -> list[dict]:
    """Append each chain's head to the checkpoint file; return what was written.

    Return ``[{chain, id, hash}, ...]``, empty when there is no event yet. A
    redelivery only appends more (identical or later) anchors: harmless.
    """
    from controlplane.audit.checkpoints import audit_checkpoint_write

    return [
        {"chain": checkpoint.chain, "id": checkpoint.id, "hash": checkpoint.hash}
        for checkpoint in audit_checkpoint_write()
    ]
