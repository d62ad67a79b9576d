"""Environments, merchants, segments, flags, flag states and overrides.

Rows describe data and the invariants the database can enforce. Every write
goes through ``flags.services``; nothing here has side effects.
"""

from django.core.validators import RegexValidator
from django.db import models

from controlplane.audit.actors import Actor

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_.-]*$",
    "Use lowercase letters, digits, '_', '.' or '-', starting with a letter or digit.",
)


class ValueType(models.TextChoices):
    BOOL = "bool", "Boolean"
    STRING = "string", "String"
    NUMBER = "number", "Number"
    JSON = "json", "JSON"


class Environment(models.Model):
    key = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    sort_order = models.PositiveIntegerField(default=0)
    # Bumped in the transaction of every change that affects evaluation.
    ruleset_version = models.BigIntegerField(default=1)
    # The ruleset version of the last change that was not confined to some
    # flags (merchant registry, segments): serving processes behind it reload
    # the whole environment; otherwise only the flags changed since.
    full_reload_version = models.BigIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["sort_order", "key"]

    def __str__(self) -> str:
        return self.key


class Merchant(models.Model):
    key = models.CharField(max_length=128, unique=True)
    name = models.CharField(max_length=200, blank=True)
    is_active = models.BooleanField(default=True)
    attributes = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Segment(models.Model):
    """Named reusable clauses over merchant attributes (all must match)."""

    key = models.CharField(max_length=64, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=100)
    description = models.TextField(blank=True)
    clauses = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key


class Flag(models.Model):
    key = models.CharField(max_length=100, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    value_type = models.CharField(max_length=8, choices=ValueType.choices)
    # Ordered [{"key": "on", "value": true, "name"?: "..."}, ...]
    variations = models.JSONField()
    owner = models.CharField(max_length=100, blank=True)
    tags = models.JSONField(default=list, blank=True)
    archived = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["key"]

    def __str__(self) -> str:
        return self.key

    @property
    def variation_keys(self) -> list[str]:
        return [variation["key"] for variation in self.variations]

    def variation_value(self, key: str):
        for variation in self.variations:
            if variation["key"] == key:
                return variation["value"]
        raise KeyError(key)


class FlagState(models.Model):
    """A flag in one environment: how it is served there."""

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="states")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="flag_states"
    )
    enabled = models.BooleanField(default=False)
    off_variation = models.CharField(max_length=100)
    # Ordered [{"clauses": [...], "serve": {...}, "description"?: "..."}]
    rules = models.JSONField(default=list, blank=True)
    # {"variation": "off"} or {"split": [{"variation": "on", "weight": 10000}, ...]}
    fallthrough = models.JSONField()
    bucket_by = models.CharField(max_length=64, default="merchant")
    # Set by a kill (emergency off), cleared by restore; shown in the admin.
    killed_at = models.DateTimeField(null=True, blank=True)
    kill_reason = models.CharField(max_length=500, blank=True)
    # Optimistic locking: an edit based on an old version is refused.
    version = models.PositiveIntegerField(default=1)
    # The environment's ruleset version of the last change to what this flag
    # serves there (state, overrides, the flag itself): a serving process at
    # version V recompiles only the flags changed after V.
    changed_in_version = models.BigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["flag__key", "environment__sort_order"]
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment"], name="flagstate_one_per_env"
            ),
        ]
        indexes = [
            models.Index(
                fields=["environment", "changed_in_version"],
                name="flagstate_env_changed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.flag.key}@{self.environment.key}"

    @property
    def percentage(self) -> float | None:
        """Return the share served the first split arm, if the fallthrough is a split."""
        split = (self.fallthrough or {}).get("split")
        if not split:
            return None
        return split[0]["weight"] / 1000


class MerchantOverride(models.Model):
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="overrides")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="overrides"
    )
    merchant = models.ForeignKey(
        Merchant, on_delete=models.CASCADE, related_name="overrides"
    )
    variation = models.CharField(max_length=100)
    note = models.CharField(max_length=500, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)
    created_by = models.CharField(max_length=150, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["flag__key", "environment__sort_order", "merchant__key"]
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment", "merchant"],
                name="override_one_per_merchant",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.flag.key}@{self.environment.key}:{self.merchant.key}={self.variation}"

    def is_live(self, now) -> bool:
        return self.expires_at is None or self.expires_at > now


class AlertTrigger(models.Model):
    """A secret URL a monitoring system calls to kill (or restore) a flag state.

    Only a SHA-256 of the secret is stored (32 random bytes: a fast hash is
    the right tool, as for API keys), plus a short prefix shown in lists.
    """

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="triggers")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="triggers"
    )
    name = models.CharField(max_length=100)
    # May a resolved alert (or {"action": "restore"}) restore the flag?
    can_restore = models.BooleanField(default=False)
    prefix = models.CharField(max_length=16)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True, default="")
    revoked_at = models.DateTimeField(null=True, blank=True)
    # The killed_at of the last kill this trigger made: a resolved alert
    # restores only that kill, never one made by someone else.
    last_kill_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["flag__key", "environment__sort_order", "pk"]

    def __str__(self) -> str:
        return f"{self.name} ({self.flag.key}@{self.environment.key})"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def as_actor(self) -> Actor:
        return Actor(type="alert_trigger", id=str(self.pk), name=self.name)


class FlagUsage(models.Model):
    """When a flag was last evaluated in an environment, and how often.

    Written by the serving processes' usage flush (``flags.hotpath.usage``),
    one upsert per flush; not a domain change, so not audited.
    """

    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="usage")
    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="flag_usage"
    )
    last_evaluated_at = models.DateTimeField()
    count = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["flag", "environment"], name="flagusage_one_per_env"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.flag_id}@{self.environment_id}: {self.count}"
