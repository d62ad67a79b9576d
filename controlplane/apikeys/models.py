"""API keys: environment-scoped server keys and management keys.

Only a SHA-256 of the whole key is stored (keys carry 32 random bytes, so a
fast hash is the right tool) plus a short prefix shown in lists.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from controlplane.audit.actors import Actor


class Scope(models.TextChoices):
    SERVER = "server", "Server (evaluate and report, one environment)"
    MANAGEMENT = "management", "Management (Django permissions of a service user)"


class ApiKey(models.Model):
    name = models.CharField(max_length=100)
    scope = models.CharField(max_length=16, choices=Scope.choices)
    environment = models.ForeignKey(
        "flags.Environment",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="api_keys",
        help_text="Service user whose permissions a management key carries.",
    )
    prefix = models.CharField(max_length=16, db_index=True)
    secret_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    created_by = models.CharField(max_length=200, blank=True, default="")
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    models.Q(scope="server", environment__isnull=False)
                    | models.Q(scope="management", environment__isnull=True)
                ),
                name="apikey_scope_environment",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def as_actor(self) -> Actor:
        return Actor(type="api_key", id=str(self.pk), name=self.name)
