"""Destinations (where notifications go) and deliveries (what was sent).

A destination's secrets (the webhook's HMAC key, an apprise URL with its
tokens) are stored because sending needs them, but never shown back: the
admin shows a prefix or the scheme only.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from django.db import models


class Channel(models.TextChoices):
    WEBHOOK = "webhook", "Signed webhook (HMAC-SHA256)"
    APPRISE = "apprise", "Apprise URL (Slack, Teams, email, ...)"


class Kind(models.TextChoices):
    ROLLOUT_STARTED = "rollout_started", "Rollout started"
    ROLLOUT_ADVANCED = "rollout_advanced", "Rollout advanced"
    ROLLOUT_AWAITING_APPROVAL = "rollout_awaiting_approval", "Waiting for approval"
    ROLLOUT_PAUSED = "rollout_paused", "Rollout paused"
    ROLLOUT_ROLLED_BACK = "rollout_rolled_back", "Rolling back / rolled back"
    ROLLOUT_ESCALATED = "rollout_escalated", "Rollback escalated"
    ROLLOUT_ROLLBACK_FAILED = "rollout_rollback_failed", "Rollback failed"
    ROLLOUT_COMPLETED = "rollout_completed", "Rollout completed"
    ROLLOUT_ABORTED = "rollout_aborted", "Rollout aborted"
    RELEASE_STARTED = "release_started", "Release started"
    RELEASE_PARTIALLY_ROLLED_BACK = (
        "release_partially_rolled_back",
        "Release: a feature rolled back alone",
    )
    RELEASE_ROLLED_BACK = "release_rolled_back", "Release rolling back / rolled back"
    RELEASE_COMPLETED = "release_completed", "Release completed"
    RELEASE_ABORTED = "release_aborted", "Release aborted"
    FLAG_KILLED = "flag_killed", "Flag killed"
    FLAG_RESTORED = "flag_restored", "Flag restored"


# A test notification from the admin; no destination subscribes to it.
TEST_KIND = "test"


class Destination(models.Model):
    name = models.CharField(max_length=100)
    environment = models.ForeignKey(
        "flags.Environment",
        on_delete=models.PROTECT,
        related_name="notification_destinations",
    )
    channel = models.CharField(max_length=16, choices=Channel.choices)
    # Webhook: the endpoint (shown). Apprise: the apprise URL (write-only).
    url = models.TextField()
    # Webhook only: the HMAC-SHA256 key (write-only; rotate to see a new one).
    secret = models.CharField(max_length=128, blank=True, default="")
    kinds = models.JSONField(default=list)
    is_enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["environment__sort_order", "name", "pk"]
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "name"], name="destination_name_per_env"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.channel})"

    @property
    def secret_prefix(self) -> str:
        return f"{self.secret[:6]}…" if self.secret else ""

    @property
    def url_display(self) -> str:
        """Return the URL as it may be shown: apprise URLs carry tokens."""
        if self.channel == Channel.APPRISE:
            scheme = self.url.split("://", 1)[0]
            return f"{scheme}://…"
        # No query and no user:password: either may hold a token.
        try:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return "(invalid URL)"
        return f"{parts.scheme}://{host}{port}{parts.path}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    RETRYING = "retrying", "Retrying"
    DELIVERED = "delivered", "Delivered"
    FAILED = "failed", "Failed"


class Delivery(models.Model):
    """One event to one destination; sent by its own task, after commit."""

    destination = models.ForeignKey(
        Destination, on_delete=models.PROTECT, related_name="deliveries"
    )
    kind = models.CharField(max_length=40)
    # No database constraint: the audit table is append-only and stands
    # alone (its TRUNCATE trigger test, exports); events are never deleted.
    audit_event = models.ForeignKey(
        "audit.AuditEvent",
        null=True,
        blank=True,
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        related_name="+",
    )
    message = models.TextField()
    # The webhook's JSON body, exactly as signed and sent.
    body = models.TextField()
    status = models.CharField(
        max_length=16,
        choices=DeliveryStatus.choices,
        default=DeliveryStatus.PENDING,
        db_index=True,
    )
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    last_error = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["-pk"]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.kind} → {self.destination.name} ({self.status})"


class DeliveryAttempt(models.Model):
    """One try: what the destination answered, briefly."""

    delivery = models.ForeignKey(
        Delivery, on_delete=models.CASCADE, related_name="attempt_rows"
    )
    number = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    duration_ms = models.FloatField()
    is_ok = models.BooleanField()
    status_code = models.PositiveIntegerField(null=True, blank=True)
    # Both cut to a few hundred characters: a response body is never kept.
    error = models.CharField(max_length=300, blank=True, default="")
    answer = models.CharField(max_length=300, blank=True, default="")

    class Meta:
        ordering = ["delivery", "number"]
        constraints = [
            models.UniqueConstraint(
                fields=["delivery", "number"], name="attempt_one_per_number"
            ),
        ]

    def __str__(self) -> str:
        return f"attempt {self.number}"
