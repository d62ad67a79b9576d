"""The check-run admin: every measurement, read-only."""

from __future__ import annotations

from django.contrib import admin

from canary.admin.display import tone_html, when_html
from canary.models import CheckRun
from controlplane.audit.admin import ReadOnlyAdminMixin


@admin.register(CheckRun)
class CheckRunAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    """Every measurement, newest first (read-only)."""

    list_display = [
        "measured",
        "rollout",
        "health_check",
        "phase",
        "value",
        "verdict_badge",
        "message",
    ]
    list_filter = ["verdict", "health_check__provider"]
    list_select_related = ["rollout", "health_check"]
    search_fields = ["health_check__name", "rollout__name"]
    ordering = ["-measured_at", "-id"]
    fields = [
        "rollout",
        "health_check",
        "phase",
        "measured",
        "value",
        "verdict_badge",
        "message",
        "detail",
    ]
    readonly_fields = fields

    @admin.display(description="measured at", ordering="measured_at")
    def measured(self, run: CheckRun) -> str:
        return when_html(run.measured_at)

    @admin.display(description="phase", ordering="phase_index")
    def phase(self, run: CheckRun) -> int:
        return run.phase_index + 1  # people count phases from 1

    @admin.display(description="verdict", ordering="verdict")
    def verdict_badge(self, run: CheckRun) -> str:
        return tone_html(run.verdict)

    @admin.display(description="why")
    def message(self, run: CheckRun) -> str:
        return (run.detail or {}).get("message", "")
