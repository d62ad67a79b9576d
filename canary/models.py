"""Rollouts, phases, health checks, check runs and outcome events.

Rows describe data and the invariants the database can enforce. Every write
goes through ``canary.services``; status changes go through
``canary.services.rollout_transition`` only.
"""

from django.db import models
from django.db.models import Q

from canary.pipeline_models import Pipeline, PipelineStage, PipelineStatus  # noqa: F401 (models)
from canary.release_models import Release, ReleaseStatus  # noqa: F401 (models)


class RolloutStatus(models.TextChoices):
    DRAFT = "draft", "Draft"
    RUNNING = "running", "Running"
    PAUSED = "paused", "Paused"
    AWAITING_APPROVAL = "awaiting_approval", "Awaiting approval"
    COMPLETED = "completed", "Completed"
    ROLLING_BACK = "rolling_back", "Rolling back"
    ROLLED_BACK = "rolled_back", "Rolled back"
    ABORTED = "aborted", "Aborted"


class TargetType(models.TextChoices):
    PILOT = "pilot", "Pilot merchants"
    PERCENTAGE = "percentage", "Percentage"
    INTERNAL = "internal", "Internal only"


class Provider(models.TextChoices):
    PROMETHEUS = "prometheus", "Prometheus"
    HTTP = "http", "HTTP"
    SQL = "sql", "SQL"
    OUTCOMES = "outcomes", "Outcome events"


class Comparator(models.TextChoices):
    LT = "lt", "<"
    LTE = "lte", "<="
    GT = "gt", ">"
    GTE = "gte", ">="
    EQ = "eq", "="


class CheckMode(models.TextChoices):
    ABSOLUTE = "absolute", "Absolute threshold"
    RELATIVE = "relative", "Relative to baseline"
    COHORT = "cohort", "Treatment vs control cohort"
    # Always-valid merchant-level comparison (canary.sequential): answers
    # worse / not worse / not yet against the merchants' own baselines.
    COMPARE = "compare", "Compare with baselines (sequential)"


class Gate(models.TextChoices):
    # Advance only once every check says "not worse" (and the soak passed).
    PROVE = "prove", "Prove: advance on evidence of no harm"
    # Advance after the soak unless a check says "worse" (a one-merchant
    # pilot cannot prove a small difference in minutes).
    GUARD = "guard", "Guard: advance after the soak unless worse"


class NoDataVerdict(models.TextChoices):
    INCONCLUSIVE = "inconclusive", "Inconclusive"
    FAIL = "fail", "Fail"


class OnFailure(models.TextChoices):
    PAUSE = "pause", "Pause the rollout"
    ROLLBACK_1 = "rollback_1", "Rollback level 1 (flag)"
    ROLLBACK_2 = "rollback_2", "Rollback level 2 (deployment)"
    ROLLBACK_3 = "rollback_3", "Rollback level 3 (migration)"


class CheckStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    PASSING = "passing", "Passing"
    FAILED = "failed", "Failed"
    INCONCLUSIVE = "inconclusive", "Inconclusive"
    ERRORED = "errored", "Errored"


class Verdict(models.TextChoices):
    PASS = "pass", "Pass"
    FAIL = "fail", "Fail"
    INCONCLUSIVE = "inconclusive", "Inconclusive"
    ERROR = "error", "Error"
    # A sequential comparison without enough evidence either way: waits,
    # never counts toward inconclusive_limit (max_duration bounds it).
    NOT_YET = "not_yet", "Not yet"


class VerificationState(models.TextChoices):
    """Where a rolled-back rollout's verification window stands (see
    ``Rollout.verification``); empty: no window was opened."""

    NONE = "", "Not verified"
    # The window is open: the compare checks measure the formerly treated
    # merchants after the rollback at ``verification["level"]``.
    VERIFYING = "verifying", "Verifying"
    # A rollback run of a higher level is on its way; verified again once
    # it succeeded.
    ESCALATING = "escalating", "Escalating"
    RECOVERED = "recovered", "Recovered"
    ENDED = "ended", "Ended without evidence of harm"
    EXHAUSTED = "exhausted", "Still worse: no level left"
    # Still worse, and an operator stopped automatic escalation.
    STOPPED = "stopped", "Still worse: escalation stopped"
    # The escalation's rollback run failed: an operator must act.
    FAILED = "failed", "Escalation failed"


class Outcome(models.TextChoices):
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"


class Rollout(models.Model):
    """One flag moved through phases in one environment."""

    flag = models.ForeignKey(
        "flags.Flag", on_delete=models.PROTECT, related_name="rollouts"
    )
    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.PROTECT, related_name="rollouts"
    )
    # The deployment being canaried, if any: rollback levels 2 and 3 revert it.
    deployment = models.ForeignKey(
        "rollback.Deployment",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="rollouts",
    )
    # The release this rollout is a member of (canary.release_models): the
    # release moves its members through their phases together.
    release = models.ForeignKey(
        "canary.Release",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="members",
    )
    name = models.CharField(max_length=200)
    status = models.CharField(
        max_length=20,
        choices=RolloutStatus.choices,
        default=RolloutStatus.DRAFT,
        db_index=True,
    )
    # The variation the rollout moves merchants to, and the one they had;
    # "on"/"off" for bool flags. The outcomes provider splits cohorts by them.
    treatment_variation = models.CharField(max_length=100, blank=True)
    control_variation = models.CharField(max_length=100, blank=True)
    current_phase = models.PositiveIntegerField(default=0)
    phase_started_at = models.DateTimeField(null=True, blank=True)
    # Only time spent running counts toward a phase's min/max_duration:
    # the running seconds of the current phase before
    # ``phase_running_since``, and when the current stretch of running began
    # (null while paused, awaiting approval or finished).
    phase_running_seconds = models.FloatField(default=0.0)
    phase_running_since = models.DateTimeField(null=True, blank=True)
    # The highest rollback level this rollout may reach (by hand, by a check
    # or by escalation); levels 2 and 3 also need a deployment.
    max_level = models.PositiveSmallIntegerField(default=3)
    # {"snapshot": flags.services.state_snapshot(...), "pilot_merchants": [...]}:
    # what a level-1 rollback or an abort restores.
    captured_state = models.JSONField(null=True, blank=True)
    # Per check name: the value measured before start (relative mode).
    baseline = models.JSONField(default=dict, blank=True)
    # Captured at start for compare checks: each merchant's outcome events
    # in the look-back window before start (canary.baselines).
    merchant_baseline = models.JSONField(default=dict, blank=True)
    # The check template the checks came from, "name@version" (blank: none).
    # The checks themselves are copied at create: a later template version
    # never changes a rollout.
    check_template = models.CharField(max_length=120, blank=True)
    # Index of the highest phase an operator approved; null = none.
    approved_phase = models.IntegerField(null=True, blank=True)
    pause_reason = models.CharField(max_length=500, blank=True)
    # After a rollback (canary.services.verification, docs/canary.md "After
    # a rollback: verify and escalate"): the window's state, indexed so the
    # controller claims the open ones, and its data: {"captured_at",
    # "phase", "merchants": [treated keys at rollback], "level",
    # "rollback_run", "since", "until", "reason", "history": [...]}.
    verification_state = models.CharField(
        max_length=12,
        choices=VerificationState.choices,
        default=VerificationState.NONE,
        blank=True,
        db_index=True,
    )
    verification = models.JSONField(default=dict, blank=True)
    # False once an operator stopped automatic escalation
    # (rollout_escalation_stop): the checks still verify, never escalate.
    auto_escalate = models.BooleanField(default=True)
    # Optimistic version, bumped by every transition and phase change.
    version = models.PositiveIntegerField(default=1)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=RolloutStatus.values),
                name="rollout_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(max_level__gte=1) & Q(max_level__lte=3),
                name="rollout_max_level_1_3",
            ),
            models.CheckConstraint(
                condition=Q(verification_state__in=VerificationState.values),
                name="rollout_verification_state_valid",
            ),
            models.CheckConstraint(
                # A draft can be aborted before it ever started.
                condition=Q(status__in=["draft", "aborted"])
                | Q(started_at__isnull=False),
                name="rollout_started_unless_draft",
            ),
        ]
        indexes = [models.Index(fields=["flag", "environment", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def is_terminal(self) -> bool:
        return self.status in (
            RolloutStatus.COMPLETED,
            RolloutStatus.ROLLED_BACK,
            RolloutStatus.ABORTED,
        )


class Phase(models.Model):
    """One step of a rollout: a target held for at least ``min_duration``."""

    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="phases"
    )
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=100)
    target_type = models.CharField(max_length=12, choices=TargetType.choices)
    pilot_merchants = models.JSONField(default=list, blank=True)
    percentage = models.FloatField(null=True, blank=True)
    min_duration = models.PositiveIntegerField(default=0, help_text="seconds")
    max_duration = models.PositiveIntegerField(
        null=True, blank=True, help_text="seconds"
    )
    requires_approval = models.BooleanField(default=False)
    gate = models.CharField(max_length=5, choices=Gate.choices, default=Gate.PROVE)

    class Meta:
        ordering = ["rollout", "index"]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "index"], name="phase_one_per_index"
            ),
            models.CheckConstraint(
                condition=Q(percentage__isnull=True)
                | (Q(percentage__gte=0) & Q(percentage__lte=100)),
                name="phase_percentage_0_100",
            ),
            models.CheckConstraint(
                condition=~Q(target_type="percentage") | Q(percentage__isnull=False),
                name="phase_percentage_target_has_percentage",
            ),
            models.CheckConstraint(
                condition=Q(max_duration__isnull=True)
                | Q(max_duration__gte=models.F("min_duration")),
                name="phase_max_duration_gte_min",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.index}: {self.name}"


class HealthCheck(models.Model):
    """A measurement taken repeatedly while a rollout runs, and its state."""

    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="checks"
    )
    name = models.CharField(max_length=100)
    provider = models.CharField(max_length=12, choices=Provider.choices)
    spec = models.JSONField(default=dict, blank=True)
    comparator = models.CharField(
        max_length=4, choices=Comparator.choices, default=Comparator.LT
    )
    threshold = models.FloatField(null=True, blank=True)
    mode = models.CharField(
        max_length=10, choices=CheckMode.choices, default=CheckMode.ABSOLUTE
    )
    # Relative mode: 0.2 means up to 20% worse than the baseline is allowed.
    relative_tolerance = models.FloatField(default=0.2)
    # Compare mode: the non-inferiority margin in the metric's unit (error
    # rate points as a ratio, 0.01 = 1 pp; latency quantiles relative, 0.1 =
    # 10% slower) and the error rate of the always-valid interval.
    margin = models.FloatField(null=True, blank=True)
    alpha = models.FloatField(default=0.05)
    # Measured, recorded and shown; never holds, pauses or rolls back.
    dry_run = models.BooleanField(default=False)
    interval = models.PositiveIntegerField(default=30, help_text="seconds")
    min_samples = models.PositiveIntegerField(default=1)
    failure_limit = models.PositiveIntegerField(default=0)
    inconclusive_limit = models.PositiveIntegerField(default=3)
    consecutive_error_limit = models.PositiveIntegerField(default=3)
    no_data = models.CharField(
        max_length=12, choices=NoDataVerdict.choices, default=NoDataVerdict.INCONCLUSIVE
    )
    on_failure = models.CharField(
        max_length=10, choices=OnFailure.choices, default=OnFailure.ROLLBACK_1
    )
    timeout = models.FloatField(default=10.0, help_text="seconds")
    next_due_at = models.DateTimeField(null=True, blank=True, db_index=True)
    # Per-phase state, reset when the rollout enters a new phase.
    consecutive_failures = models.PositiveIntegerField(default=0)
    consecutive_errors = models.PositiveIntegerField(default=0)
    inconclusive_count = models.PositiveIntegerField(default=0)
    pass_count = models.PositiveIntegerField(default=0)
    status = models.CharField(
        max_length=12, choices=CheckStatus.choices, default=CheckStatus.PENDING
    )
    state_phase = models.IntegerField(null=True, blank=True)
    last_verdict = models.CharField(max_length=12, choices=Verdict.choices, blank=True)
    last_value = models.FloatField(null=True, blank=True)
    last_run_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["rollout", "id"]
        # A sql check runs the author's query on a database: its own
        # permission, apart from editing rollouts (canary.api.views, admin).
        permissions = [
            ("manage_sql_checks", "Can create and change SQL health checks"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["rollout", "name"], name="healthcheck_unique_name"
            ),
            models.CheckConstraint(
                condition=Q(relative_tolerance__gte=0),
                name="healthcheck_tolerance_non_negative",
            ),
            models.CheckConstraint(
                condition=Q(interval__gte=1), name="healthcheck_interval_positive"
            ),
            models.CheckConstraint(
                condition=Q(alpha__gt=0) & Q(alpha__lt=0.5),
                name="healthcheck_alpha_0_half",
            ),
            models.CheckConstraint(
                condition=Q(margin__isnull=True) | Q(margin__gt=0),
                name="healthcheck_margin_positive",
            ),
            models.CheckConstraint(
                condition=Q(timeout__gt=0), name="healthcheck_timeout_positive"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.provider})"


class CheckRun(models.Model):
    """One measurement of one check: kept forever to explain decisions."""

    # Named health_check: a field called ``check`` would shadow Model.check().
    health_check = models.ForeignKey(
        HealthCheck, on_delete=models.CASCADE, related_name="runs"
    )
    rollout = models.ForeignKey(
        Rollout, on_delete=models.CASCADE, related_name="check_runs"
    )
    phase_index = models.PositiveIntegerField()
    value = models.FloatField(null=True, blank=True)
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    # query, threshold, baseline, cohort stats, message
    detail = models.JSONField(default=dict, blank=True)
    measured_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["measured_at", "id"]
        indexes = [models.Index(fields=["rollout", "phase_index", "measured_at"])]

    def __str__(self) -> str:
        return f"{self.health_check_id}@{self.phase_index}: {self.verdict}"


class OutcomeEvent(models.Model):
    """An outcome reported by an app for one evaluation of a flag."""

    flag_key = models.CharField(max_length=100, db_index=True)
    environment = models.ForeignKey(
        "flags.Environment", on_delete=models.CASCADE, related_name="outcome_events"
    )
    merchant_key = models.CharField(max_length=128)
    variation = models.CharField(max_length=100)
    outcome = models.CharField(max_length=8, choices=Outcome.choices)
    duration_ms = models.FloatField(null=True, blank=True)
    name = models.CharField(max_length=100, blank=True)
    occurred_at = models.DateTimeField(db_index=True)
    received_at = models.DateTimeField(auto_now_add=True)
    # the reporter's id of the event (a relay's), stored once per environment
    event_id = models.CharField(max_length=64, null=True, blank=True)

    class Meta:
        ordering = ["occurred_at", "id"]
        indexes = [
            models.Index(
                fields=["environment", "flag_key", "occurred_at"],
                name="outcome_env_flag_time",
            ),
            # merchants suggest-pilot: a month of events per merchant read in
            # merchant order from the index alone (no sort, no table visit)
            models.Index(
                fields=["environment", "flag_key", "merchant_key", "occurred_at"],
                include=["outcome", "duration_ms"],
                name="outcome_env_flag_merchant",
            ),
        ]
        constraints = [
            # An event that names several flags is stored once per flag,
            # each row with the event's id.
            models.UniqueConstraint(
                fields=["environment", "event_id", "flag_key"],
                condition=models.Q(event_id__isnull=False),
                name="outcome_event_id_once_per_flag",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.flag_key}:{self.merchant_key}={self.variation} {self.outcome}"


class CheckTemplate(models.Model):
    """A named, versioned set of health checks that rollouts reference.

    Versions are immutable: a change is a new row with the next version
    (``canary.services.check_template_update``). ``checks`` holds the
    definitions as ``checks_clean`` returns them.
    """

    name = models.CharField(max_length=100)
    version = models.PositiveIntegerField()
    description = models.CharField(max_length=500, blank=True)
    checks = models.JSONField(default=list)
    # An archived version is never picked by a new rollout; rollouts that
    # already reference it keep their copy of its checks.
    archived = models.BooleanField(default=False)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-version"]
        constraints = [
            models.UniqueConstraint(
                fields=["name", "version"], name="checktemplate_unique_version"
            ),
            models.CheckConstraint(
                condition=Q(version__gte=1), name="checktemplate_version_positive"
            ),
        ]

    def __str__(self) -> str:
        return self.reference

    @property
    def reference(self) -> str:
        """Return ``name@version``, the form rollouts record."""
        return f"{self.name}@{self.version}"
