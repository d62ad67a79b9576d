"""The audit log in the admin: read-only, filterable, one history per object.

Nobody adds, changes or deletes an event here (the model refuses too). The
changelist filters by ``target_type`` and ``target_id`` from the query
string, which is what the "History (audit)" link of every change page opens.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import HttpRequest
from django.urls import NoReverseMatch, reverse
from django.utils.html import format_html

from controlplane.audit.models import AuditEvent


def audit_history_url(*, target_type: str, target_id: Any) -> str:
    """Return the audit changelist URL filtered to one target."""
    query = urlencode({"target_type": target_type, "target_id": str(target_id)})
    return f"{reverse('admin:audit_auditevent_changelist')}?{query}"


def _target_admin_url(event: AuditEvent) -> str | None:
    app_label, _, model_name = event.target_type.partition(".")
    if not model_name:
        return None
    try:
        return reverse(f"admin:{app_label}_{model_name}_change", args=[event.target_id])
    except NoReverseMatch:
        return None


def _pretty(value: Any) -> str:
    if value is None or value == {}:
        return "-"
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)
    return format_html('<pre style="margin:0; white-space:pre-wrap">{}</pre>', text)


class ReadOnlyAdminMixin:
    """A model admin that can list and show rows but never add, change or delete."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(AuditEvent)
class AuditEventAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = ["id", "created_at", "actor", "action", "target", "environment"]
    list_display_links = ["id", "created_at"]
    list_filter = ["actor_type", "action", "environment", "target_type", "created_at"]
    date_hierarchy = "created_at"
    search_fields = ["actor_name", "target_repr", "=target_id", "=request_id"]
    actions = None
    list_per_page = 50
    fieldsets = [
        (
            "Event",
            {
                "fields": [
                    "id",
                    "created_at",
                    "actor",
                    "action",
                    "target",
                    "environment",
                    "request_id",
                ]
            },
        ),
        (
            "Change",
            {"fields": ["changed_keys", "before_json", "after_json", "details_json"]},
        ),
        ("Chain", {"fields": ["prev_hash", "hash"]}),
    ]
    readonly_fields = [
        "id",
        "created_at",
        "actor",
        "action",
        "target",
        "environment",
        "request_id",
        "changed_keys",
        "before_json",
        "after_json",
        "details_json",
        "prev_hash",
        "hash",
    ]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = dict(extra_context or {})
        target_type = request.GET.get("target_type", "")
        target_id = request.GET.get("target_id", "")
        if target_type and target_id:
            latest = (
                AuditEvent.objects.filter(target_type=target_type, target_id=target_id)
                .values_list("target_repr", flat=True)
                .first()
            )
            extra_context["audit_target"] = {
                "type": target_type,
                "id": target_id,
                "repr": latest or target_id,
                "clear_url": reverse("admin:audit_auditevent_changelist"),
            }
        return super().changelist_view(request, extra_context)

    @admin.display(description="actor", ordering="actor_name")
    def actor(self, event: AuditEvent) -> str:
        return f"{event.actor_type}:{event.actor_name}"

    @admin.display(description="target", ordering="target_type")
    def target(self, event: AuditEvent) -> str:
        label = f"{event.target_type} {event.target_repr or event.target_id}"
        url = _target_admin_url(event)
        return format_html('<a href="{}">{}</a>', url, label) if url else label

    @admin.display(description="changed")
    def changed_keys(self, event: AuditEvent) -> str:
        before, after = event.before, event.after
        if not isinstance(before, dict) or not isinstance(after, dict):
            return (
                "created"
                if before is None and after is not None
                else ("removed" if after is None and before is not None else "-")
            )
        keys = sorted(
            k for k in before.keys() | after.keys() if before.get(k) != after.get(k)
        )
        return ", ".join(keys) or "-"

    @admin.display(description="before")
    def before_json(self, event: AuditEvent) -> str:
        return _pretty(event.before)

    @admin.display(description="after")
    def after_json(self, event: AuditEvent) -> str:
        return _pretty(event.after)

    @admin.display(description="details")
    def details_json(self, event: AuditEvent) -> str:
        return _pretty(event.details)
