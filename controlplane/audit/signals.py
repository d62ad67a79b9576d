"""Signals of the audit log, for decoupled consumers (notifications).

``audit_recorded`` is sent by ``record_audit_event`` after the event is
saved, still inside the change's transaction: a receiver that writes rows
writes them in that transaction, and one that talks to the network must
defer it with ``transaction.on_commit``.
"""

from __future__ import annotations

from django.dispatch import Signal

# Sent with ``event`` (the saved AuditEvent).
audit_recorded = Signal()
