"""Releases: several flags moved through the same phases together.

A release owns one rollout per flag (``Rollout.release``): each member
rollout keeps its own flag, treatment, captured state, checks and rollback,
so a feature-specific rollback is that member's level-1 rollback. The
release holds the members in lockstep (``canary.controller.release_decide``)
and decides, when a check says *worse*, which member(s) the evidence
blames (``canary.attribution``). Its status follows its members'
(``canary.services.releases.release_sync``); nothing else assigns it.
"""

from django.db import models
from django.db.models import Q


class ReleaseStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    # Every member finished; at least one feature is deployed (some may
    # have been rolled back on their own: ``summary["rolled_back"]``).
    COMPLETED = "completed", "Completed"
    # Every feature was rolled back.
    ROLLED_BACK = "rolled_back", "Rolled back"
    ABORTED = "aborted", "Aborted"


class Release(models.Model):
    """Several flags released together in one environment."""

    name = models.CharField(max_length=200)
    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.PROTECT, related_name="releases"
    )
    status = models.CharField(
        max_length=12,
        choices=ReleaseStatus.choices,
        default=ReleaseStatus.DRAFT,
        db_index=True,
    )
    # The plan its members were created from (canary.templates_data).
    template = models.CharField(max_length=100, blank=True)
    # What the release ended with, or so far: {"deployed": [flag keys],
    # "rolled_back": [{"flag", "phase", "reason", "attribution"}],
    # "estimates": {flag: {check: {...}}}} (release_sync keeps it).
    summary = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=ReleaseStatus.values),
                name="release_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in (
            ReleaseStatus.COMPLETED,
            ReleaseStatus.ROLLED_BACK,
            ReleaseStatus.ABORTED,
        )
