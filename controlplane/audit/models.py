"""The append-only, hash-chained audit log."""

from django.db import models


class AuditEventQuerySet(models.QuerySet):
    def update(self, **kwargs):  # noqa: D102
        raise AuditLogImmutable("audit events cannot be updated")

    def delete(self):  # noqa: D102
        raise AuditLogImmutable("audit events cannot be deleted")


class AuditLogImmutable(Exception):
    """Raised on any attempt to change or remove an audit event."""


class AuditEvent(models.Model):
    """One change, by one actor, written in the transaction of the change.

    ``canonical`` is the event's content as the exact JSON text that was
    hashed, written once with the row; ``hash`` is SHA-256 over ``prev_hash``
    followed by that text, so editing or removing any row breaks the chain
    from there on. The other columns are the same content in queryable form
    (a JSON column may read back a number differently from how it was
    written, e.g. PostgreSQL returns ``1e16`` as ``10000000000000000``), and
    verification checks they still say what ``canonical`` says. Events
    written before the column existed have ``canonical`` NULL and are
    verified from their columns (see ``audit_chain_verify``).

    There is one chain per environment (``env:<key>``) and one for the rest
    (``global``: the registry, flag definitions, keys, users); ``chain_seq``
    is the event's position in its chain, from 1, and the pair is unique, so
    two writers can never both append after the same event. Events written
    before chains existed have no position and open the ``global`` chain in
    id order (see ``controlplane.audit.chains``).
    """

    created_at = models.DateTimeField(db_index=True)
    actor_type = models.CharField(max_length=16)
    actor_id = models.CharField(max_length=128)
    actor_name = models.CharField(max_length=150, db_index=True)
    action = models.CharField(max_length=64, db_index=True)
    target_type = models.CharField(max_length=64)
    target_id = models.CharField(max_length=128)
    target_repr = models.CharField(max_length=255, blank=True)
    environment = models.CharField(max_length=64, blank=True, db_index=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    details = models.JSONField(default=dict, blank=True)
    request_id = models.CharField(max_length=64, blank=True)
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64, unique=True)
    canonical = models.TextField(null=True, blank=True, editable=False)
    chain = models.CharField(max_length=80, default="global", editable=False)
    chain_seq = models.BigIntegerField(null=True, blank=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["target_type", "target_id", "-id"])]
        constraints = [
            # Partial: the head of a chain is found without walking the
            # events that have no position (written before chains existed).
            models.UniqueConstraint(
                fields=["chain", "chain_seq"],
                condition=models.Q(chain_seq__isnull=False),
                name="audit_event_chain_position",
            )
        ]
        default_permissions = ("view",)

    def __str__(self) -> str:
        return f"#{self.pk} {self.action} {self.target_type}:{self.target_repr or self.target_id}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise AuditLogImmutable("audit events cannot be updated")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise AuditLogImmutable("audit events cannot be deleted")
