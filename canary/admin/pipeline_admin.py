"""The pipeline admin: the stages side by side with their evidence, the
Start / Approve / Abort buttons (each with a confirmation page) and a
create form (flags, the two stages' plans, approval; no JSON).

Nothing here assigns a field: the buttons and the add page call
``canary.services.pipelines`` with ``actor_for_user(request.user)``.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from canary.admin.display import tone_html, when_html
from canary.admin.forms import ReasonForm
from canary.admin.object_actions import ObjectAction, ObjectActionsMixin
from canary.models import Pipeline, PipelineStatus
from canary.services import pipelines as services
from canary.templates_data import PLANS
from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.exceptions import DomainError
from flags.models import Environment, Flag

ACTIONS: dict[str, ObjectAction] = {
    action.name: action
    for action in (
        ObjectAction(
            "start",
            "Start",
            "The first stage's preflight runs, then its rollout or release starts. "
            "Each later stage starts when the one before it completed.",
            ReasonForm,
            lambda actor, p, d: services.pipeline_start(
                pipeline_id=p.pk, actor=actor, reason=d.get("reason", "")
            ),
            frozenset({PipelineStatus.DRAFT}),
        ),
        ObjectAction(
            "approve",
            "Approve",
            "The next stage starts after its preflight. The pipeline's creator "
            "cannot approve it.",
            ReasonForm,
            lambda actor, p, d: services.pipeline_approve(
                pipeline_id=p.pk, actor=actor, reason=d.get("reason", "")
            ),
            frozenset({PipelineStatus.AWAITING_APPROVAL}),
        ),
        ObjectAction(
            "abort",
            "Abort",
            "The running stage and every stage not started are aborted; each "
            "flag goes back as captured at its start.",
            ReasonForm,
            lambda actor, p, d: services.pipeline_abort(
                pipeline_id=p.pk, actor=actor, reason=d.get("reason", "")
            ),
            frozenset(
                {
                    PipelineStatus.DRAFT,
                    PipelineStatus.RUNNING,
                    PipelineStatus.AWAITING_APPROVAL,
                }
            ),
            is_destructive=True,
        ),
    )
}


def _plans(default: str) -> dict:
    return {
        "choices": [(name, f"{name}: {p['description']}") for name, p in PLANS.items()],
        "initial": default,
    }


class PipelineCreateForm(forms.Form):
    """Create a draft pipeline: one flag (rollouts) or several (releases)."""

    name = forms.CharField(required=False, max_length=200)
    flags = forms.ModelMultipleChoiceField(
        queryset=Flag.objects.filter(archived=False),
        to_field_name="key",
        help_text="One flag: each stage is a rollout; several: each is a release.",
    )
    first_environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), to_field_name="key", initial="staging"
    )
    first_plan = forms.ChoiceField(**_plans("staging-then-production"))
    second_environment = forms.ModelChoiceField(
        queryset=Environment.objects.all(), to_field_name="key", initial="production"
    )
    second_plan = forms.ChoiceField(**_plans("pilot-10-50-100"))
    pilot_merchants = forms.CharField(
        required=False,
        help_text="Merchant keys for pilot and internal phases, comma-separated.",
    )
    duration_scale = forms.FloatField(
        required=False,
        min_value=0.001,
        max_value=100,
        help_text="Multiply every phase duration (0.05 turns minutes into seconds).",
    )
    requires_approval = forms.BooleanField(
        required=False,
        help_text="Wait for someone other than the creator before the second stage.",
    )

    def stages(self) -> list[dict]:
        data = self.cleaned_data
        pilots = [k.strip() for k in data["pilot_merchants"].split(",") if k.strip()]
        stages = []
        for which in ("first", "second"):
            stage: dict[str, Any] = {
                "environment": data[f"{which}_environment"].key,
                "template": data[f"{which}_plan"],
                "pilot_merchants": pilots,
            }
            if data["duration_scale"] is not None:
                stage["duration_scale"] = data["duration_scale"]
            stages.append(stage)
        return stages


def _with_urls(evidence: list[dict]) -> list[dict]:
    for stage in evidence:
        stage["url"] = reverse(
            f"admin:canary_{stage['kind']}_change", args=[stage["target_id"]]
        )
    return evidence


@admin.register(Pipeline)
class PipelineAdmin(ObjectActionsMixin, admin.ModelAdmin):
    list_display = ["id", "name", "status_badge", "stage", "approval", "started"]
    list_filter = ["status"]
    search_fields = ["name"]
    fields = [
        "name",
        "status_badge",
        "stage",
        "requires_approval",
        "approved_by",
        "approved",
        "why",
        "created_by",
        "created",
        "started",
        "finished",
        "version",
    ]
    readonly_fields = fields
    change_form_template = "admin/canary/pipeline/change_form.html"

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # read-only: every change is a button calling a service

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(stage_count=Count("stages"))

    @admin.display(description="status", ordering="status")
    def status_badge(self, pipeline: Pipeline) -> str:
        return tone_html(pipeline.status)

    @admin.display(description="stage")
    def stage(self, pipeline: Pipeline) -> str:
        count = getattr(pipeline, "stage_count", None) or pipeline.stages.count()
        return f"{pipeline.current_stage + 1} of {count}"

    @admin.display(description="approval")
    def approval(self, pipeline: Pipeline) -> str:
        return "needed" if pipeline.requires_approval else "-"

    @admin.display(description="approved at")
    def approved(self, pipeline: Pipeline) -> str:
        return when_html(pipeline.approved_at)

    @admin.display(description="why")
    def why(self, pipeline: Pipeline) -> str:
        return (pipeline.summary or {}).get("reason", "") or "-"

    @admin.display(description="created at")
    def created(self, pipeline: Pipeline) -> str:
        return when_html(pipeline.created_at)

    @admin.display(description="started at", ordering="started_at")
    def started(self, pipeline: Pipeline) -> str:
        return when_html(pipeline.started_at)

    @admin.display(description="finished at")
    def finished(self, pipeline: Pipeline) -> str:
        return when_html(pipeline.finished_at)

    object_actions = ACTIONS

    def action_summary(self, pipeline: Pipeline) -> str:
        return f"{pipeline.name}: {pipeline.status}, stage {pipeline.current_stage + 1}"

    def pending_change(self, pipeline: Pipeline) -> Any:
        return services.pipeline_pending_change(pipeline)

    def get_urls(self) -> list:
        return [*self.object_action_urls(), *super().get_urls()]

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        pipeline = (
            self.get_object(request, admin.utils.unquote(object_id))
            if object_id is not None
            else None
        )
        if pipeline is not None:
            extra_context["stages"] = _with_urls(services.pipeline_evidence(pipeline))
            extra_context["audit_history_url"] = audit_history_url(
                target_type="canary.pipeline", target_id=str(pipeline.pk)
            )
            extra_context["pipeline_actions"] = self.object_action_links(
                request, pipeline
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def add_view(
        self,
        request: HttpRequest,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        """Create a draft through ``pipeline_create``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = PipelineCreateForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            keys = [flag.key for flag in form.cleaned_data["flags"]]
            try:
                pipeline = services.pipeline_create(
                    actor=actor_for_user(request.user),
                    name=form.cleaned_data["name"],
                    flag=keys[0] if len(keys) == 1 else None,
                    flags=keys if len(keys) > 1 else None,
                    stages=form.stages(),
                    requires_approval=form.cleaned_data["requires_approval"],
                )
            except DomainError as exc:
                form.add_error(
                    None, f"{exc.field}: {exc.message}" if exc.field else exc.message
                )
            else:
                self.message_user(
                    request,
                    f"Pipeline {pipeline.pk} created as a draft. Start it with the "
                    "Start button.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(
                    reverse("admin:canary_pipeline_change", args=[pipeline.pk])
                )
        context = {
            **self.admin_site.each_context(request),
            "title": "Create a pipeline: staging, then production",
            "opts": self.model._meta,
            "form": form,
            "intro": "Each stage's rollout (one flag) or release (several) is created "
            "as a draft; start the pipeline from its page.",
            "submit_label": "Create draft",
        }
        return TemplateResponse(request, "admin/canary/rollout/form_page.html", context)
