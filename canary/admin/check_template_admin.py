"""The check template admin: versions listed and shown read-only (checks as
a table, not raw JSON); the add page, "new version" and "archive" call
``canary.services.check_templates`` as the admin user, so each change has
its audit event. A sql check needs ``canary.manage_sql_checks`` here too.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from canary import services
from canary.models import CheckTemplate
from canary.services.check_templates import check_rule_text
from controlplane.api.input import UntrustedInput, loads_json
from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.exceptions import DomainError
from flags.forms import untrusted_input_error

_FORM_PAGE = "admin/canary/rollout/form_page.html"


class CheckTemplateForm(forms.Form):
    """The add page and the new-version page (``name`` only on add)."""

    name = forms.CharField(max_length=100)
    description = forms.CharField(
        max_length=500, required=False, widget=forms.TextInput(attrs={"size": 80})
    )
    checks = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 16, "cols": 100}),
        help_text='A JSON list of health checks, e.g. [{"name": "error_rate", '
        '"provider": "outcomes", "mode": "compare", "spec": {"metric": '
        '"error_rate"}, "margin": 0.01}]. Add "dry_run": true to measure a '
        "check without letting it decide.",
    )

    def clean_checks(self) -> Any:
        try:
            value = loads_json(self.cleaned_data["checks"].strip(), allow_nul=False)
        except UntrustedInput as exc:
            raise untrusted_input_error(exc) from None
        if isinstance(value, dict):
            value = [value]
        if not isinstance(value, list):
            raise forms.ValidationError("a JSON list of check objects")
        return value


def checks_table(checks: list[dict]) -> str:
    """Return ``checks`` as an HTML table (what the admin shows)."""
    if not checks:
        return "-"
    rows = [
        (
            check["name"],
            "yes" if check.get("dry_run") else "no",
            check["provider"],
            check["mode"],
            ", ".join(f"{k}={v}" for k, v in sorted((check.get("spec") or {}).items()))
            or "-",
            check_rule_text(check),
            f"{check['interval']}s",
            check["min_samples"],
            f"{check['failure_limit']} / {check['inconclusive_limit']} / "
            f"{check['consecutive_error_limit']}",
            check["on_failure"],
        )
        for check in checks
    ]
    head = (
        "name",
        "dry run",
        "provider",
        "mode",
        "spec",
        "rule",
        "interval",
        "min samples",
        "limits (fail / inconclusive / error)",
        "on failure",
    )
    return format_html(
        "<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>",
        format_html_join("", "<th>{}</th>", ((h,) for h in head)),
        format_html_join("", "<tr>" + "<td>{}</td>" * len(head) + "</tr>", rows),
    )


@admin.register(CheckTemplate)
class CheckTemplateAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "version",
        "description",
        "check_count",
        "archived",
        "created_by",
        "created_at",
    ]
    list_filter = ["archived"]
    search_fields = ["name", "description"]
    fields = [
        "name",
        "version",
        "reference",
        "description",
        "archived",
        "created_by",
        "created_at",
        "checks_display",
        "actions_display",
    ]
    readonly_fields = fields

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Versions are immutable: the page is read-only, changes are buttons.
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _may_change(self, request: HttpRequest) -> bool:
        return request.user.has_perm("canary.change_checktemplate")

    @admin.display(description="checks")
    def check_count(self, template: CheckTemplate) -> int:
        return len(template.checks or [])

    @admin.display(description="checks")
    def checks_display(self, template: CheckTemplate) -> str:
        return checks_table(template.checks or [])

    @admin.display(description="actions")
    def actions_display(self, template: CheckTemplate) -> str:
        links = [
            (
                reverse("admin:canary_checktemplate_new_version", args=[template.pk]),
                "New version from this one",
            )
        ]
        if not template.archived:
            links.append(
                (
                    reverse("admin:canary_checktemplate_archive", args=[template.pk]),
                    f"Archive {template.reference}",
                )
            )
        links.append(
            (
                audit_history_url(
                    target_type="canary.checktemplate", target_id=str(template.pk)
                ),
                "Audit history",
            )
        )
        return format_html_join(" ", "<a class='button' href='{}'>{}</a>", links)

    def get_urls(self) -> list:
        return [
            path(
                "<int:object_id>/new-version/",
                self.admin_site.admin_view(self.new_version_view),
                name="canary_checktemplate_new_version",
            ),
            path(
                "<int:object_id>/archive/",
                self.admin_site.admin_view(self.archive_view),
                name="canary_checktemplate_archive",
            ),
            *super().get_urls(),
        ]

    def _page(self, request: HttpRequest, form: forms.Form, **context: Any) -> Any:
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

    def _sql_allowed(self, request: HttpRequest, form: forms.Form) -> bool:
        checks = form.cleaned_data["checks"]
        if services.checks_need_sql_permission(checks) and not (
            request.user.has_perm(services.SQL_CHECK_PERMISSION)
        ):
            form.add_error(
                "checks",
                f"You need the {services.SQL_CHECK_PERMISSION} permission to "
                "create a sql health check.",
            )
            return False
        return True

    def _done(self, request: HttpRequest, template: CheckTemplate, text: str) -> Any:
        self.message_user(request, text, messages.SUCCESS)
        return HttpResponseRedirect(
            reverse("admin:canary_checktemplate_change", args=[template.pk])
        )

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        """Create version 1 through ``check_template_create``."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = CheckTemplateForm(request.POST or None)
        if (
            request.method == "POST"
            and form.is_valid()
            and self._sql_allowed(request, form)
        ):
            try:
                template = services.check_template_create(
                    actor=actor_for_user(request.user), **form.cleaned_data
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                return self._done(
                    request, template, f"Check template {template.reference} created."
                )
        return self._page(
            request,
            form,
            title="Create a check template",
            intro="Version 1 of a named check set; rollouts reference it as NAME "
            "or NAME@VERSION.",
            submit_label="Create",
        )

    def new_version_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """Write the next version through ``check_template_update``."""
        base = get_object_or_404(CheckTemplate, pk=object_id)
        if not self._may_change(request):
            raise PermissionDenied
        initial = {
            "name": base.name,
            "description": base.description,
            "checks": json.dumps(base.checks, indent=2),
        }
        data = {**request.POST.dict(), "name": base.name} if request.POST else None
        form = CheckTemplateForm(data, initial=initial)
        form.fields["name"].disabled = True
        if (
            request.method == "POST"
            and form.is_valid()
            and self._sql_allowed(request, form)
        ):
            try:
                template = services.check_template_update(
                    actor=actor_for_user(request.user),
                    name=base.name,
                    checks=form.cleaned_data["checks"],
                    description=form.cleaned_data["description"],
                )
            except DomainError as exc:
                form.add_error(None, exc.message)
            else:
                return self._done(
                    request, template, f"Check template {template.reference} saved."
                )
        return self._page(
            request,
            form,
            title=f"New version of {base.name} (from version {base.version})",
            original=base,
            intro="Versions are immutable: this writes the next version; rollouts "
            "already created keep their checks.",
            submit_label="Save as a new version",
            cancel_url=reverse("admin:canary_checktemplate_change", args=[base.pk]),
        )

    def archive_view(self, request: HttpRequest, object_id: int) -> HttpResponse:
        """GET: confirm. POST: ``check_template_archive`` of this version."""
        template = get_object_or_404(CheckTemplate, pk=object_id)
        if not self._may_change(request):
            raise PermissionDenied
        if request.method == "POST":
            try:
                services.check_template_archive(
                    actor=actor_for_user(request.user),
                    name=template.name,
                    version=template.version,
                )
            except DomainError as exc:
                self.message_user(request, exc.message, messages.ERROR)
                return HttpResponseRedirect(
                    reverse("admin:canary_checktemplate_change", args=[template.pk])
                )
            return self._done(request, template, f"{template.reference} archived.")
        return self._page(
            request,
            forms.Form(),
            title=f"Archive {template.reference}?",
            original=template,
            intro="New rollouts will no longer pick this version; rollouts that use "
            "it keep their checks.",
            submit_label="Yes, archive",
            cancel_url=reverse("admin:canary_checktemplate_change", args=[template.pk]),
        )
