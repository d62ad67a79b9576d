"""Admin for deployments and rollback runs; actions call the services.

Deploy backends are settings only: nothing here shows or edits them.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from controlplane.audit.actors import actor_for_user
from controlplane.exceptions import DomainError
from rollback import services
from rollback.models import Deployment, RollbackRun, RollbackStep, RunStatus
from rollback.preflight import rollback_preflight


def _tone_html(value: object):
    from django.utils.html import format_html

    from controlplane.console.templatetags.console import tone

    return format_html('<span class="tone tone-{}">{}</span>', tone(value), value)


def _when_html(value):
    from django.utils.html import format_html

    from controlplane.console.templatetags.console import when

    return format_html("{}", when(value))


class ShownMixin:
    """Statuses in their tone and times with seconds on read-only pages."""

    @admin.display(description="status", ordering="status")
    def status_badge(self, obj):
        return _tone_html(obj.status)

    @admin.display(description="created at", ordering="created_at")
    def created(self, obj):
        return _when_html(obj.created_at)

    @admin.display(description="started at")
    def started(self, obj):
        return _when_html(obj.started_at)

    @admin.display(description="finished at")
    def finished(self, obj):
        return _when_html(obj.finished_at)


def _list_only_change(model_admin: admin.ModelAdmin, request, obj) -> bool:
    """Return the change permission for the list's actions only.

    Every field is read-only and every change is an action calling a
    service, so a row's page is a view page (no Save buttons); the list
    keeps the permission its actions (roll back, retry) require.
    """
    if obj is not None:
        return False
    return admin.ModelAdmin.has_change_permission(model_admin, request, obj)


class RollbackNowForm(forms.Form):
    level = forms.TypedChoiceField(
        coerce=int,
        initial=1,
        choices=[
            (1, "1 - flag toggle (kill the flag)"),
            (2, "2 - deployment revert (+ level 1)"),
            (3, "3 - migration revert, last resort (+ levels 1 and 2)"),
        ],
    )
    flag = forms.CharField(
        required=False,
        help_text="Flag key to kill in the deployment's environment "
        "(level 1; leave empty to skip the flag step).",
    )
    reason = forms.CharField(max_length=1000, widget=forms.Textarea(attrs={"rows": 2}))


class RollbackStepInline(ShownMixin, admin.TabularInline):
    model = RollbackStep
    extra = 0
    can_delete = False
    fields = [
        "position",
        "level",
        "actuator",
        "status_badge",
        "attempts",
        "output_pre",
        "error",
        "started",
        "finished",
        "claimed_by",
    ]
    readonly_fields = fields

    @admin.display(description="output")
    def output_pre(self, obj: RollbackStep):
        from django.utils.html import format_html

        return format_html(
            "<pre style='white-space:pre-wrap;max-width:60em'>{}</pre>",
            obj.output or "",
        )

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Deployment)
class DeploymentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "service",
        "environment",
        "version",
        "status",
        "previous",
        "artifact",
        "deployed_at",
    ]
    list_filter = ["status", "environment", "service"]
    search_fields = ["service", "version", "artifact"]
    readonly_fields = [
        "service",
        "environment",
        "version",
        "previous",
        "artifact",
        "status",
        "migration_state",
        "recorded_by",
        "deployed_at",
    ]
    actions = ["roll_back_now"]

    def has_add_permission(self, request) -> bool:
        return False  # recorded by CI through the API or `manage.py deployment record`

    def has_change_permission(self, request, obj=None) -> bool:
        return _list_only_change(self, request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Roll back now…", permissions=["change"])
    def roll_back_now(self, request, queryset):
        form = RollbackNowForm(request.POST if "confirm" in request.POST else None)
        if "confirm" in request.POST and form.is_valid():
            for deployment in queryset:
                flag_restore = None
                if form.cleaned_data["flag"]:
                    flag_restore = {
                        "flag": form.cleaned_data["flag"],
                        "snapshot": None,
                        "environment": deployment.environment.key,
                    }
                try:
                    run = services.rollback_run_start(
                        actor=actor_for_user(request.user),
                        level=form.cleaned_data["level"],
                        reason=form.cleaned_data["reason"],
                        deployment=deployment,
                        flag_restore=flag_restore,
                    )
                except DomainError as exc:
                    self.message_user(
                        request, f"{deployment}: {exc.message}", messages.ERROR
                    )
                else:
                    self.message_user(
                        request,
                        f"{deployment}: rollback run {run.pk} started",
                        messages.SUCCESS,
                    )
            return None
        reports = [(d, rollback_preflight(deployment=d)) for d in queryset]
        return TemplateResponse(
            request,
            "admin/rollback/rollback_confirm.html",
            {
                **self.admin_site.each_context(request),
                "title": "Roll back now: confirm",
                "form": form,
                "reports": reports,
                "queryset": queryset,
                "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME,
            },
        )


@admin.register(RollbackRun)
class RollbackRunAdmin(ShownMixin, admin.ModelAdmin):
    list_display = [
        "id",
        "level",
        "status_badge",
        "deployment",
        "trigger",
        "actor_name",
        "created",
        "finished",
    ]
    list_filter = ["status", "level", "trigger"]
    readonly_fields = [
        "deployment",
        "level",
        "reason",
        "trigger",
        "trigger_ref",
        "status_badge",
        "error",
        "actor_type",
        "actor_id",
        "actor_name",
        "created",
        "started",
        "finished",
    ]
    inlines = [RollbackStepInline]
    actions = ["retry_failed_run"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return _list_only_change(self, request, obj)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    @admin.action(description="Retry failed run", permissions=["change"])
    def retry_failed_run(self, request, queryset):
        for run in queryset:
            if run.status != RunStatus.FAILED:
                self.message_user(
                    request,
                    f"run {run.pk} is {run.status}: only failed runs are retried",
                    messages.WARNING,
                )
                continue
            try:
                services.rollback_run_retry(
                    actor=actor_for_user(request.user), run_id=run.pk
                )
            except DomainError as exc:
                self.message_user(
                    request, f"run {run.pk}: {exc.message}", messages.ERROR
                )
            else:
                self.message_user(request, f"run {run.pk} retried", messages.SUCCESS)
