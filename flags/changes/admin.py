"""Admin of change requests, scheduled changes and approval policies.

Pages and buttons call the services (create, approve, reject, cancel,
schedule); nothing here writes a row itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.console.templatetags.console import tone, when
from controlplane.exceptions import DomainError
from flags.changes import services
from flags.changes.models import (
    ApprovalPolicy,
    ChangeRequest,
    ChangeRequestStatus,
    Review,
    ScheduledChange,
    ScheduledChangeStatus,
)
from flags.changes.operations import OPERATIONS, operation_get

_FORM_PAGE = "admin/changes/form_page.html"
_OPERATION_CHOICES = [
    (name, f"{name} ({op.summary})") for name, op in OPERATIONS.items()
]


class _ChangeForm(forms.Form):
    operation = forms.ChoiceField(choices=_OPERATION_CHOICES)
    arguments = forms.JSONField(
        widget=forms.Textarea(attrs={"rows": 4, "cols": 70}),
        help_text='e.g. {"flag": "checkout_theme", "environment": "production", '
        '"percentage": 10}',
    )
    reason = forms.CharField(max_length=500, required=False)


class ScheduleForm(_ChangeForm):
    run_at = forms.DateTimeField(help_text="e.g. 2026-12-01 18:00:00 (UTC)")


class CommentForm(forms.Form):
    comment = forms.CharField(
        max_length=1000, required=False, widget=forms.Textarea(attrs={"rows": 3})
    )


def _status(obj: Any) -> str:
    return format_html(
        '<span class="tone tone-{}">{}</span>', tone(obj.status), obj.status
    )


class _ChangeAdmin(admin.ModelAdmin):
    """Shared: read-only rows, a status tone, service-backed pages."""

    change_form_template = "admin/changes/change_form.html"
    list_filter = ("status", "environment", "operation")
    search_fields = ("target", "author_name", "operation")
    actions = None

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # the form is read-only; state moves through the buttons
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("environment")

    @admin.display(description="status", ordering="status")
    def status_tone(self, obj: Any) -> str:
        return _status(obj)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Any) -> str:
        return when(obj.created_at)

    def _page(
        self, request: HttpRequest, form: forms.Form, **context: Any
    ) -> HttpResponse:
        return TemplateResponse(
            request,
            _FORM_PAGE,
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "form": form,
                **context,
            },
        )

    def _may_operate(self, request: HttpRequest, operation: str) -> None:
        if not request.user.has_perm(operation_get(operation).permission):
            raise PermissionDenied

    def _url(self, name: str, *args: Any) -> str:
        meta = self.model._meta
        return reverse(f"admin:{meta.app_label}_{meta.model_name}_{name}", args=args)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            pk = admin.utils.unquote(object_id)
            extra_context["change_actions"] = self.buttons(request, pk)
            extra_context["audit_history_url"] = audit_history_url(
                target_type=self.model._meta.label_lower, target_id=pk
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def buttons(self, request: HttpRequest, pk: Any) -> list[dict[str, str]]:
        raise NotImplementedError

    def _command_view(
        self,
        request: HttpRequest,
        object_id: str,
        *,
        title: str,
        run: Callable[[Any, dict], Any],
        danger: bool = False,
    ) -> HttpResponse:
        obj = self.get_object(request, object_id)
        if obj is None:
            raise PermissionDenied
        form = CommentForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            try:
                done = run(obj, form.cleaned_data)
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
            else:
                self.message_user(
                    request,
                    f"{done}: {done.status}"
                    + (f" - {done.result}" if done.result else ""),
                    messages.SUCCESS,
                )
            return HttpResponseRedirect(self._url("change", obj.pk))
        return self._page(
            request,
            form,
            title=title,
            original=obj,
            intro=f"{obj.operation} of {obj.target} in {obj.environment.key}: "
            f"{json.dumps(obj.arguments)}",
            submit_label=title,
            danger=danger,
            confirm=f"{title}?" if danger else "",
            cancel_url=self._url("change", obj.pk),
        )


class ReviewInline(admin.TabularInline):
    model = Review
    extra = 0
    can_delete = False
    fields = ("reviewer_name", "decision", "comment", "created_at")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(ChangeRequest)
class ChangeRequestAdmin(_ChangeAdmin):
    list_display = (
        "id",
        "status_tone",
        "environment",
        "operation",
        "target",
        "author_name",
        "approvals",
        "created",
    )
    readonly_fields = (
        "environment",
        "operation",
        "arguments",
        "target",
        "based_on_version",
        "based_on",
        "author_name",
        "required_approvals",
        "reason",
        "result",
        "applied_at",
        "created_at",
    )
    fields = readonly_fields
    inlines = [ReviewInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("reviews")

    @admin.display(description="approvals")
    def approvals(self, change: ChangeRequest) -> str:
        done = sum(1 for r in change.reviews.all() if r.decision == "approve")
        return f"{done}/{change.required_approvals}"

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/approve/",
                self.admin_site.admin_view(self.approve_view),
                name="changes_changerequest_approve",
            ),
            path(
                "<path:object_id>/reject/",
                self.admin_site.admin_view(self.reject_view),
                name="changes_changerequest_reject",
            ),
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="changes_changerequest_cancel",
            ),
            *super().get_urls(),
        ]

    def buttons(self, request: HttpRequest, pk: Any) -> list[dict[str, str]]:
        change = ChangeRequest.objects.filter(pk=pk).first()
        if change is None or change.status != ChangeRequestStatus.PENDING:
            return []
        return [
            {"label": label, "url": self._url(name, change.pk)}
            for name, label in (
                ("approve", "Approve"),
                ("reject", "Reject"),
                ("cancel", "Cancel request"),
            )
        ]

    def approve_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(change: ChangeRequest, data: dict) -> Any:
            self._may_operate(request, change.operation)
            return services.change_request_approve(
                change_request_id=change.pk,
                actor=actor_for_user(request.user),
                comment=data["comment"],
            )

        return self._command_view(request, object_id, title="Approve", run=run)

    def reject_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(change: ChangeRequest, data: dict) -> Any:
            self._may_operate(request, change.operation)
            return services.change_request_reject(
                change_request_id=change.pk,
                actor=actor_for_user(request.user),
                comment=data["comment"],
            )

        return self._command_view(
            request, object_id, title="Reject", run=run, danger=True
        )

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(change: ChangeRequest, data: dict) -> Any:
            return services.change_request_cancel(
                change_request_id=change.pk,
                actor=actor_for_user(request.user),
                reason=data["comment"],
            )

        return self._command_view(
            request, object_id, title="Cancel request", run=run, danger=True
        )

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = _ChangeForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            self._may_operate(request, data["operation"])
            try:
                change = services.change_request_create(
                    actor=actor_for_user(request.user),
                    operation=data["operation"],
                    arguments=data["arguments"],
                    reason=data["reason"],
                )
            except DomainError as exc:
                form.add_error(
                    "arguments" if (exc.field or "").startswith("arguments") else None,
                    exc.message,
                )
            else:
                self.message_user(
                    request,
                    f"Change request {change.pk} created: it needs "
                    f"{change.required_approvals} approval(s) by someone else.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._url("change", change.pk))
        return self._page(
            request,
            form,
            title="Request a change",
            intro="The change applies once the approvals it needs are given.",
            submit_label="Create request",
        )


@admin.register(ScheduledChange)
class ScheduledChangeAdmin(_ChangeAdmin):
    list_display = (
        "id",
        "status_tone",
        "environment",
        "operation",
        "target",
        "run",
        "author_name",
        "result",
    )
    readonly_fields = (
        "environment",
        "operation",
        "arguments",
        "target",
        "run_at",
        "based_on_version",
        "based_on",
        "author_name",
        "reason",
        "result",
        "applied_at",
        "created_at",
    )
    fields = readonly_fields

    @admin.display(description="run at", ordering="run_at")
    def run(self, change: ScheduledChange) -> str:
        return when(change.run_at)

    def get_urls(self) -> list:
        return [
            path(
                "<path:object_id>/cancel/",
                self.admin_site.admin_view(self.cancel_view),
                name="changes_scheduledchange_cancel",
            ),
            *super().get_urls(),
        ]

    def buttons(self, request: HttpRequest, pk: Any) -> list[dict[str, str]]:
        change = ScheduledChange.objects.filter(pk=pk).first()
        if change is None or change.status != ScheduledChangeStatus.SCHEDULED:
            return []
        return [{"label": "Cancel", "url": self._url("cancel", change.pk)}]

    def cancel_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        def run(change: ScheduledChange, data: dict) -> Any:
            return services.scheduled_change_cancel(
                scheduled_change_id=change.pk,
                actor=actor_for_user(request.user),
                reason=data["comment"],
            )

        return self._command_view(
            request, object_id, title="Cancel", run=run, danger=True
        )

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ScheduleForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            self._may_operate(request, data["operation"])
            try:
                change = services.scheduled_change_create(
                    actor=actor_for_user(request.user),
                    operation=data["operation"],
                    arguments=data["arguments"],
                    run_at=data["run_at"],
                    reason=data["reason"],
                )
            except DomainError as exc:
                field = exc.field or ""
                form.add_error(
                    "arguments"
                    if field.startswith("arguments")
                    else ("run_at" if field == "run_at" else None),
                    exc.message,
                )
            else:
                self.message_user(
                    request,
                    f"Scheduled change {change.pk} runs at "
                    f"{change.run_at.strftime('%Y-%m-%d %H:%M:%S %Z')}.",
                    messages.SUCCESS,
                )
                return HttpResponseRedirect(self._url("change", change.pk))
        return self._page(
            request,
            form,
            title="Schedule a change",
            intro="Applied within about a second of its time, or refused when a "
            "field it sets changed since now (docs/changes.md).",
            submit_label="Schedule",
        )


@admin.register(ApprovalPolicy)
class ApprovalPolicyAdmin(admin.ModelAdmin):
    list_display = (
        "environment",
        "flag_state_approvals",
        "override_approvals",
        "kill_approvals",
        "rollout_start_approvals",
        "updated_at",
    )
    fields = (
        "environment",
        "flag_state_approvals",
        "override_approvals",
        "kill_approvals",
        "rollout_start_approvals",
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple:
        return ("environment",) if obj is not None else ()

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: ApprovalPolicy, form: Any, change: bool
    ) -> None:
        saved = services.approval_policy_set(
            actor=actor_for_user(request.user),
            environment=obj.environment,
            **{
                kind: getattr(obj, f"{kind}_approvals")
                for kind in ("flag_state", "override", "kill", "rollout_start")
            },
        )
        obj.pk = saved.pk
        obj._state.adding = False
