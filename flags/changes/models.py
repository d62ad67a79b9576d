"""Change requests (four-eyes), their reviews, scheduled changes, policies."""

from __future__ import annotations

from django.db import models

from controlplane.audit.actors import Actor


class ChangeRequestStatus(models.TextChoices):
    PENDING = "pending", "pending"
    APPROVED = "approved", "approved"
    # Claimed by one applier of a rollout start (its preflight runs outside
    # any transaction); a reaper hands it back when the applier died.
    APPLYING = "applying", "applying"
    APPLIED = "applied", "applied"
    REJECTED = "rejected", "rejected"
    CANCELLED = "cancelled", "cancelled"
    FAILED = "failed", "failed"


class ScheduledChangeStatus(models.TextChoices):
    SCHEDULED = "scheduled", "scheduled"
    APPLYING = "applying", "applying"
    APPLIED = "applied", "applied"
    CANCELLED = "cancelled", "cancelled"
    REFUSED = "refused", "refused"
    FAILED = "failed", "failed"


class Decision(models.TextChoices):
    APPROVE = "approve", "approve"
    REJECT = "reject", "reject"


class AuthoredChange(models.Model):
    """What a change request and a scheduled change have in common."""

    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.PROTECT, related_name="+"
    )
    operation = models.CharField(max_length=64)
    arguments = models.JSONField(default=dict)
    # What the change is about, for lists: "checkout_theme", "rollout 3".
    target = models.CharField(max_length=200, blank=True)
    based_on_version = models.PositiveIntegerField(null=True, blank=True)
    # The fields the stale-version rule compares, as they were at creation.
    based_on = models.JSONField(default=dict, blank=True)
    author_type = models.CharField(max_length=16)
    author_id = models.CharField(max_length=150)
    author_name = models.CharField(max_length=150)
    reason = models.CharField(max_length=500, blank=True)
    # What the fields it sets were once applied (the stale-version rule of
    # later scheduled changes of the same target counts them as expected).
    after = models.JSONField(default=dict, blank=True)
    # Why it failed or was refused; what it applied.
    result = models.TextField(blank=True)
    applied_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def author(self) -> Actor:
        return Actor(type=self.author_type, id=self.author_id, name=self.author_name)


class ChangeRequest(AuthoredChange):
    """A change that waits for N approvals by people other than its author."""

    status = models.CharField(
        max_length=16,
        choices=ChangeRequestStatus.choices,
        default=ChangeRequestStatus.PENDING,
    )
    required_approvals = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "updated_at"])]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(required_approvals__gte=1),
                name="change_request_needs_an_approval",
            )
        ]

    def __str__(self) -> str:
        return f"change request {self.pk}: {self.operation} {self.target}"


class Review(models.Model):
    """One reviewer's decision on a change request."""

    change_request = models.ForeignKey(
        ChangeRequest, on_delete=models.CASCADE, related_name="reviews"
    )
    reviewer_type = models.CharField(max_length=16)
    reviewer_id = models.CharField(max_length=150)
    reviewer_name = models.CharField(max_length=150)
    # Who the reviewer is for the four-eyes rule (``identity_of``).
    reviewer_identity = models.CharField(max_length=200)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    comment = models.CharField(max_length=1000, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["change_request", "reviewer_identity"],
                name="one_review_per_reviewer",
            )
        ]

    def __str__(self) -> str:
        return f"{self.reviewer_name} {self.decision}s #{self.change_request_id}"


class ScheduledChange(AuthoredChange):
    """A change applied by the beat-driven worker at ``run_at``."""

    run_at = models.DateTimeField()
    status = models.CharField(
        max_length=16,
        choices=ScheduledChangeStatus.choices,
        default=ScheduledChangeStatus.SCHEDULED,
    )

    class Meta:
        ordering = ["run_at", "id"]
        indexes = [models.Index(fields=["status", "run_at"])]

    def __str__(self) -> str:
        return f"scheduled change {self.pk}: {self.operation} {self.target}"


class ApprovalPolicy(models.Model):
    """How many approvals each kind of change needs in one environment.

    0 means the change applies at once. No row: every change is immediate.
    """

    environment = models.OneToOneField(
        "flags.Environment", on_delete=models.CASCADE, related_name="approval_policy"
    )
    flag_state_approvals = models.PositiveSmallIntegerField(default=0)
    override_approvals = models.PositiveSmallIntegerField(default=0)
    # Kills (and restores) stay immediate by default: an emergency stop.
    kill_approvals = models.PositiveSmallIntegerField(default=0)
    rollout_start_approvals = models.PositiveSmallIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "approval policies"
        constraints = [
            models.CheckConstraint(
                condition=models.Q(flag_state_approvals__lte=10)
                & models.Q(override_approvals__lte=10)
                & models.Q(kill_approvals__lte=10)
                & models.Q(rollout_start_approvals__lte=10),
                name="approval_policy_at_most_10",
            )
        ]

    def __str__(self) -> str:
        return f"approval policy of {self.environment}"

    def approvals_for(self, kind: str) -> int:
        return int(getattr(self, f"{kind}_approvals"))
