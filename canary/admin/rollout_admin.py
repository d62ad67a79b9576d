"""The rollout and check-run admins."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import CharField, Count, OuterRef, QuerySet, Subquery
from django.db.models.fields.json import KeyTextTransform
from django.db.models.functions import Cast
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils.html import format_html, format_html_join

from canary import services
from canary.admin.actions import ACTIONS, RolloutAction, approvals_needed
from canary.admin.display import phase_text, tone_html, when_html
from canary.admin.forms import RolloutCreateForm
from canary.admin.inlines import HealthCheckInline, PhaseInline
from canary.admin.object_actions import ObjectActionsMixin
from canary.admin.report_views import ReportViewsMixin
from canary.models import CheckRun, Phase, Rollout
from canary.services.pipeline_reads import stage_pair_evidence
from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.audit.models import AuditEvent
from controlplane.exceptions import DomainError

LATEST_RUNS = 20
# The list's "why" column shows this much of the explanation.
LIST_WHY_CHARS = 140


# -- rollouts -----------------------------------------------------------------


def _decision_html(event: AuditEvent | None) -> str:
    if event is None:
        return "-"
    details = event.details or {}
    rows = [
        (key, json.dumps(value, default=str)[:400])
        for key, value in details.items()
        if key != "captured_state"
    ]
    return format_html(
        "<strong>{}</strong> by {} at {}<br>{}",
        event.action,
        f"{event.actor_type}:{event.actor_name}",
        when_html(event.created_at),
        format_html_join("", "<div><code>{}</code>: {}</div>", rows),
    )


def _intro(spec: RolloutAction, rollout: Rollout) -> str:
    needed = approvals_needed(spec, rollout)
    if not needed:
        return spec.intro
    return (
        f"{spec.intro} {rollout.environment.key} requires {needed} approval(s) "
        f"by someone else for this: confirming creates a change request, and "
        f"the rollout starts when it is approved."
    )


@admin.register(Rollout)
class RolloutAdmin(ObjectActionsMixin, ReportViewsMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "name",
        "flag_in_environment",
        "status_badge",
        "phase",
        "started",
        "why",
    ]
    list_filter = ["status", "environment"]
    search_fields = ["name", "flag__key"]
    list_select_related = ["flag", "environment"]
    inlines = [PhaseInline, HealthCheckInline]
    fields = [
        "name",
        "release_link",
        "flag",
        "environment",
        "deployment",
        "max_level",
        "check_template",
        "status_badge",
        "phase",
        "explanation",
        "last_decision",
        "treatment_variation",
        "control_variation",
        "approved_phase_text",
        "started",
        "phase_started",
        "phase_running_seconds",
        "phase_running_since_at",
        "finished",
        "verification_state",
        "verification_summary",
        "auto_escalate",
        "created_by",
        "version",
        "baseline",
        "captured_state",
        "latest_check_runs",
    ]
    readonly_fields = fields
    change_form_template = "admin/canary/rollout/change_form.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # The page is read-only; every change is a button calling a service.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # The changelist's phase and "why" columns come from subqueries:
        # a constant number of queries whatever the page size.
        phases = Phase.objects.filter(rollout=OuterRef("pk")).order_by()
        last_transition = AuditEvent.objects.filter(
            target_type="canary.rollout",
            target_id=Cast(OuterRef("pk"), CharField()),
            action="rollout.transition",
        ).order_by("-id")
        return (
            super()
            .get_queryset(request)
            .annotate(
                phase_count=Subquery(
                    phases.values("rollout").annotate(n=Count("id")).values("n")
                ),
                phase_name=Subquery(
                    phases.filter(index=OuterRef("current_phase")).values("name")[:1]
                ),
                last_reason=Subquery(
                    last_transition.annotate(
                        reason=KeyTextTransform("reason", "details")
                    ).values("reason")[:1]
                ),
            )
        )

    object_actions = ACTIONS

    def action_queryset(self) -> QuerySet:
        return Rollout.objects.select_related("flag", "environment")

    def action_intro(self, spec: RolloutAction, rollout: Rollout) -> str:
        return _intro(spec, rollout)

    def action_summary(self, rollout: Rollout) -> str:
        return (
            f"{rollout.name}: {rollout.flag.key} in {rollout.environment.key}, "
            f"{rollout.status}, "
            f"{phase_text(rollout.current_phase, rollout.phases.count())}"
        )

    @admin.display(description="phase")
    def phase(self, rollout: Rollout) -> str:
        count = getattr(rollout, "phase_count", None)
        if count is None:
            count = rollout.phases.count()
        name = getattr(rollout, "phase_name", None)
        if name is None:
            phase = rollout.phases.filter(index=rollout.current_phase).first()
            name = phase.name if phase else ""
        return phase_text(rollout.current_phase, count, name or "")

    @admin.display(description="status", ordering="status")
    def status_badge(self, rollout: Rollout) -> str:
        return tone_html(rollout.status)

    @admin.display(description="started at", ordering="started_at")
    def started(self, rollout: Rollout) -> str:
        return when_html(rollout.started_at)

    @admin.display(description="phase started at")
    def phase_started(self, rollout: Rollout) -> str:
        return when_html(rollout.phase_started_at)

    @admin.display(description="phase running since")
    def phase_running_since_at(self, rollout: Rollout) -> str:
        return when_html(rollout.phase_running_since)

    @admin.display(description="finished at")
    def finished(self, rollout: Rollout) -> str:
        return when_html(rollout.finished_at)

    @admin.display(description="approved phase")
    def approved_phase_text(self, rollout: Rollout) -> str:
        return phase_text(rollout.approved_phase)

    @admin.display(description="why")
    def explanation(self, rollout: Rollout) -> str:
        """The reason of the last decision: pause reason, or the last transition's."""
        return rollout.pause_reason or getattr(rollout, "last_reason", "") or ""

    @admin.display(description="release")
    def release_link(self, rollout: Rollout) -> str:
        if rollout.release_id is None:
            return "-"
        return format_html(
            '<a href="{}">release {}</a> (moves its flags together)',
            reverse("admin:canary_release_change", args=[rollout.release_id]),
            rollout.release_id,
        )

    @admin.display(description="flag in environment", ordering="flag__key")
    def flag_in_environment(self, rollout: Rollout) -> str:
        return format_html(
            "<code>{}</code> in {}", rollout.flag.key, rollout.environment.key
        )

    @admin.display(description="why")
    def why(self, rollout: Rollout) -> str:
        """The explanation, cut for the list (in full on hover and the page)."""
        text = self.explanation(rollout)
        if len(text) <= LIST_WHY_CHARS:
            return text
        return format_html(
            '<span title="{}">{}…</span>', text, text[: LIST_WHY_CHARS - 1].rstrip()
        )

    @admin.display(description="verification after the rollback")
    def verification_summary(self, rollout: Rollout) -> str:
        v = rollout.verification or {}
        if not v.get("level"):
            return "-"
        return (
            f"level {v['level']} (rollback run {v.get('rollback_run')}), "
            f"{len(v.get('merchants') or [])} formerly treated merchants, "
            f"{v.get('since')} .. {v.get('until')}: {v.get('reason', '')}"
        )

    @admin.display(description="last decision (audit)")
    def last_decision(self, rollout: Rollout) -> str:
        event = (
            AuditEvent.objects.filter(
                target_type="canary.rollout", target_id=str(rollout.pk)
            )
            .exclude(action="rollout.created")
            .order_by("-id")
            .first()
        )
        return _decision_html(event)

    @admin.display(description=f"latest check runs (last {LATEST_RUNS})")
    def latest_check_runs(self, rollout: Rollout) -> str:
        runs = (
            CheckRun.objects.filter(rollout=rollout)
            .select_related("health_check")
            .order_by("-measured_at", "-id")[:LATEST_RUNS]
        )
        if not runs:
            return "none yet"
        rows = [
            (
                when_html(run.measured_at),
                run.health_check.name,
                run.phase_index + 1,
                "-" if run.value is None else f"{run.value:.4g}",
                tone_html(run.verdict),
                (run.detail or {}).get("message", ""),
            )
            for run in runs
        ]
        return format_html(
            "<table id='latest-check-runs'><thead><tr><th>time</th><th>check</th>"
            "<th>phase</th><th>value</th><th>verdict</th><th>why</th></tr></thead>"
            "<tbody>{}</tbody></table>",
            format_html_join(
                "",
                "<tr><td>{0}</td><td>{1}</td><td>{2}</td><td>{3}</td>"
                "<td>{4}</td><td>{5}</td></tr>",
                rows,
            ),
        )

    def _charts(self, rollout: Rollout) -> list[dict]:
        """Return the page's charts (``canary.charts``) from the report."""
        from canary.charts import rollout_charts
        from canary.report import report_build

        if rollout.started_at is None:
            return []
        return rollout_charts(report_build(rollout))

    # -- pages ----------------------------------------------------------------

    def get_urls(self) -> list:
        return [*self.object_action_urls(), *self.report_urls(), *super().get_urls()]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            rollout = self.get_object(request, admin.utils.unquote(object_id))
            extra_context["rollout_actions"] = self.object_action_links(
                request, rollout
            )
            if rollout is not None:
                extra_context["charts"] = self._charts(rollout)
                # A pipeline's later stage: the earlier stage's evidence beside.
                extra_context["pipeline_pair"] = stage_pair_evidence(rollout)
            extra_context["audit_history_url"] = audit_history_url(
                target_type="canary.rollout", target_id=object_id
            )
            extra_context["report_url"] = reverse(
                "admin:canary_rollout_report", args=[admin.utils.unquote(object_id)]
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """Create a draft from a named plan through ``rollout_create_from_template``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = RolloutCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                template_checks = (
                    services.check_template_resolve(data["check_template"]).checks
                    if data["check_template"]
                    else []
                )
            except DomainError as exc:
                form.add_error("check_template", exc.message)
                template_checks = []
        if request.method == "POST" and form.is_valid():
            if services.checks_need_sql_permission(
                data["checks"], template_checks
            ) and not (request.user.has_perm(services.SQL_CHECK_PERMISSION)):
                # A sql check runs its author's query on a database: it needs
                # its own permission, not only the rollout ones.
                form.add_error(
                    "checks",
                    f"You need the {services.SQL_CHECK_PERMISSION} permission to "
                    "create a sql health check.",
                )
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                rollout = services.rollout_create_from_template(
                    actor=actor_for_user(request.user),
                    template=data["template"],
                    flag=data["flag"],
                    environment=data["environment"],
                    pilot_merchants=[
                        k.strip()
                        for k in data["pilot_merchants"].split(",")
                        if k.strip()
                    ],
                    checks=data["checks"],
                    check_template=data["check_template"] or None,
                    name=data["name"] or None,
                    duration_scale=data["duration_scale"],
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                self.message_user(
                    request,
                    f"Rollout {rollout.pk} created as a draft. Start it "
                    "with the Start button.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:canary_rollout_change", args=[rollout.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Create a rollout from a plan",
            "opts": self.model._meta,
            "form": form,
            "intro": "The rollout is created as a draft; start it from its page.",
            "submit_label": "Create draft",
        }
        return TemplateResponse(request, "admin/canary/rollout/form_page.html", context)
