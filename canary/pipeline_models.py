"""Pipelines: one release or rollout run environment after environment.

A pipeline owns ordered stages (``PipelineStage``), each one a rollout (one
flag) or a release (several flags) in its own environment, typically
staging then production. A stage starts only when the one before it
completed (and, with ``requires_approval``, once someone other than the
creator approved). ``canary.services.pipelines`` is the only code that
assigns ``Pipeline.status``; the stage's rollout or release reports its end
through ``pipeline_stage_finished``, in the transaction that ended it.
"""

from django.db import models
from django.db.models import Q


class PipelineStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    # A stage completed; the next one waits for an approval.
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    COMPLETED = "completed", "Completed"
    # A stage was rolled back or aborted, or its start was refused.
    FAILED = "failed", "Failed"
    ABORTED = "aborted", "Aborted"


class Pipeline(models.Model):
    """A rollout or release run stage after stage across environments."""

    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=20,
        choices=PipelineStatus.choices,
        default=PipelineStatus.DRAFT,
        db_index=True,
    )
    requires_approval = models.BooleanField(default=False)
    approved_by = models.CharField(max_length=150, blank=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    # The stage running, or the next one to run (0-based).
    current_stage = models.PositiveIntegerField(default=0)
    # Why it failed or was aborted, and each stage's summary once finished.
    summary = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    # ``type:name`` of the creating actor: the four-eyes rule compares it.
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=PipelineStatus.values),
                name="pipeline_status_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in (
            PipelineStatus.COMPLETED,
            PipelineStatus.FAILED,
            PipelineStatus.ABORTED,
        )


class PipelineStage(models.Model):
    """One environment's part of a pipeline: a rollout or a release."""

    pipeline = models.ForeignKey(
        Pipeline, on_delete=models.CASCADE, related_name="stages"
    )
    index = models.PositiveIntegerField()
    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.PROTECT, related_name="pipeline_stages"
    )
    rollout = models.ForeignKey(
        "canary.Rollout",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="pipeline_stages",
    )
    release = models.ForeignKey(
        "canary.Release",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="pipeline_stages",
    )
    # Set once the stage's rollout or release was started by the pipeline:
    # a redelivered start task finds it and does nothing.
    started_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["pipeline", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["pipeline", "index"], name="pipeline_stage_index_once"
            ),
            models.CheckConstraint(
                condition=(
                    Q(rollout__isnull=False, release__isnull=True)
                    | Q(rollout__isnull=True, release__isnull=False)
                ),
                name="pipeline_stage_one_target",
            ),
        ]

    def __str__(self) -> str:
        return f"stage {self.index + 1} of pipeline {self.pipeline_id}"

    @property
    def target(self) -> models.Model:
        """Return the stage's rollout or release."""
        return self.rollout if self.rollout_id is not None else self.release

    @property
    def kind(self) -> str:
        return "rollout" if self.rollout_id is not None else "release"
