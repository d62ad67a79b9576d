"""The rollout page's read-only inlines: phases (numbered from 1) and
health checks (statuses in their tones, times with seconds)."""

from __future__ import annotations

from django.contrib import admin

from canary import services
from canary.admin.display import tone_html, when_html
from canary.models import HealthCheck, Phase
from flags import admin as flags_admin


class ReadOnlyInline(flags_admin.ReadOnlyInline):
    show_change_link = False  # phases, checks and runs have no pages of their own


class PhaseInline(ReadOnlyInline):
    model = Phase
    fields = [
        "number",
        "name",
        "target_type",
        "percentage",
        "pilot_merchants",
        "min_duration",
        "max_duration",
        "requires_approval",
        "gate",
    ]
    readonly_fields = fields

    @admin.display(description="#")
    def number(self, phase: Phase) -> int:
        return phase.index + 1  # people count phases from 1


class HealthCheckInline(ReadOnlyInline):
    model = HealthCheck
    fields = [
        "name",
        "decides",
        "provider",
        "rule",
        "status_badge",
        "last_value",
        "last_verdict_badge",
        "pass_count",
        "min_samples",
        "limits",
        "on_failure",
        "last_run",
    ]
    readonly_fields = fields

    @admin.display(description="status")
    def status_badge(self, check: HealthCheck) -> str:
        return tone_html(check.status)

    @admin.display(description="last verdict")
    def last_verdict_badge(self, check: HealthCheck) -> str:
        return tone_html(check.last_verdict)

    @admin.display(description="last run at")
    def last_run(self, check: HealthCheck) -> str:
        return when_html(check.last_run_at)

    @admin.display(description="rule")
    def rule(self, check: HealthCheck) -> str:
        # The same words as the check template pages (compare mode included).
        return services.check_rule_text(services.health_check_definition(check))

    @admin.display(description="decides")
    def decides(self, check: HealthCheck) -> str:
        # A dry-run check is measured and shown; the gate never reads it.
        return "no (dry run)" if check.dry_run else "yes"

    @admin.display(description="limits (fail / inconclusive / error)")
    def limits(self, check: HealthCheck) -> str:
        return (
            f"{check.failure_limit} / {check.inconclusive_limit} / "
            f"{check.consecutive_error_limit}"
        )
