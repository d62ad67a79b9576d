"""Admin for alert triggers: created through the service, URL shown once; revoke."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils.html import format_html

from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import audit_history_url
from controlplane.console.templatetags.console import tone, when
from controlplane.exceptions import DomainError
from flags import services
from flags.models import AlertTrigger
from flags.services.triggers import trigger_url


@admin.register(AlertTrigger)
class AlertTriggerAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "flag",
        "environment",
        "status",
        "can_restore",
        "prefix",
        "last_kill",
    )
    list_filter = ("environment", "can_restore")
    list_select_related = ("flag", "environment")
    search_fields = ("name", "prefix", "flag__key")
    fields = ("name", "flag", "environment", "can_restore")
    readonly_fields = (
        "prefix",
        "created_at",
        "created_by",
        "last_kill_at",
        "revoked_at",
    )
    actions = ["revoke_triggers"]

    @admin.display(description="status", ordering="revoked_at")
    def status(self, trigger: AlertTrigger) -> str:
        text = "revoked" if trigger.revoked_at is not None else "armed"
        return format_html('<span class="tone tone-{}">{}</span>', tone(text), text)

    @admin.display(description="last kill", ordering="last_kill_at")
    def last_kill(self, trigger: AlertTrigger) -> str:
        return when(trigger.last_kill_at)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        if object_id is not None:
            extra_context["audit_history_url"] = audit_history_url(
                target_type=self.model._meta.label_lower,
                target_id=admin.utils.unquote(object_id),
            )
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple:
        if obj is None:
            return self.fields
        return (*self.fields, *self.readonly_fields)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> tuple:
        if obj is None:
            return ()
        return (*self.fields, *self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def save_model(
        self, request: HttpRequest, obj: Any, form: Any, change: bool
    ) -> None:
        if change:
            return
        try:
            created, raw = services.alert_trigger_create(
                actor=actor_for_user(request.user),
                flag=obj.flag,
                environment=obj.environment,
                name=obj.name,
                can_restore=obj.can_restore,
            )
        except DomainError as exc:
            self.message_user(
                request, f"Trigger not created: {exc.message}", messages.ERROR
            )
            return
        obj.pk = created.pk
        obj.__dict__.update(created.__dict__)
        url = request.build_absolute_uri(trigger_url(created, raw))
        self.message_user(
            request,
            f"Trigger created. Copy its URL now, it is not shown again: {url}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected triggers", permissions=["change"])
    def revoke_triggers(self, request: HttpRequest, queryset: QuerySet) -> None:
        actor = actor_for_user(request.user)
        count = 0
        for trigger in queryset.select_related("flag", "environment"):
            if trigger.revoked_at is None:
                services.alert_trigger_revoke(actor=actor, trigger=trigger)
                count += 1
        self.message_user(request, f"{count} trigger(s) revoked.")
