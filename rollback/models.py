"""Deployments, rollback runs and their ordered steps."""

from __future__ import annotations

from django.db import models


class DeploymentStatus(models.TextChoices):
    LIVE = "live", "live"
    SUPERSEDED = "superseded", "superseded"
    REVERTED = "reverted", "reverted"


class RunStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class StepStatus(models.TextChoices):
    PENDING = "pending", "pending"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    SKIPPED = "skipped", "skipped"


class Trigger(models.TextChoices):
    MANUAL = "manual", "manual"
    ROLLOUT = "rollout", "rollout"
    CHECK = "check", "check"


class Deployment(models.Model):
    """One release of a service in an environment, as CI recorded it."""

    service = models.CharField(max_length=100)
    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.PROTECT, related_name="deployments"
    )
    version = models.CharField(max_length=200)
    previous = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="next_deployments",
    )
    artifact = models.CharField(max_length=500, blank=True)
    status = models.CharField(
        max_length=20, choices=DeploymentStatus.choices, default=DeploymentStatus.LIVE
    )
    # {alias: {app_label: last applied migration name or null}} before the deploy.
    migration_state = models.JSONField(default=dict, blank=True)
    recorded_by = models.CharField(max_length=200, blank=True)
    deployed_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-deployed_at", "-id"]
        indexes = [models.Index(fields=["service", "environment", "status"])]

    def __str__(self) -> str:
        return f"{self.service}@{self.environment.key} {self.version} (#{self.pk})"


class RollbackRun(models.Model):
    """A requested rollback: levels 1..N as ordered steps run by a task."""

    deployment = models.ForeignKey(
        Deployment,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rollback_runs",
    )
    level = models.PositiveSmallIntegerField()
    reason = models.CharField(max_length=1000, blank=True)
    trigger = models.CharField(
        max_length=20, choices=Trigger.choices, default=Trigger.MANUAL
    )
    trigger_ref = models.CharField(max_length=200, blank=True)
    status = models.CharField(
        max_length=20, choices=RunStatus.choices, default=RunStatus.PENDING
    )
    error = models.TextField(blank=True)
    # Who asked: steps act on their behalf in the audit log.
    actor_type = models.CharField(max_length=20)
    actor_id = models.CharField(max_length=200)
    actor_name = models.CharField(max_length=200)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(level__gte=1, level__lte=3),
                name="rollbackrun_level_1_to_3",
            ),
        ]

    def __str__(self) -> str:
        return f"rollback run #{self.pk} (level {self.level}, {self.status})"


class RollbackStep(models.Model):
    """One actuator call of a run; its status commits before and after it runs."""

    run = models.ForeignKey(RollbackRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    level = models.PositiveSmallIntegerField()
    actuator = models.CharField(max_length=50)
    params = models.JSONField(default=dict, blank=True)
    status = models.CharField(
        max_length=20, choices=StepStatus.choices, default=StepStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    output = models.TextField(blank=True)
    error = models.TextField(blank=True)
    # Set when a worker claims the step; a new claim token per attempt.
    claim_token = models.CharField(max_length=64, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # The process group of the command last started for the step and its
    # host: a worker taking the step over there kills what is left of it.
    process_group = models.PositiveIntegerField(null=True, blank=True)
    process_host = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(
                fields=["run", "position"], name="rollbackstep_one_per_position"
            ),
        ]

    def __str__(self) -> str:
        return f"step {self.position} {self.actuator} ({self.status})"
