"""Admin of merchants, segments and environments."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from controlplane.audit.actors import Actor, actor_for_user
from flags import services
from flags.admin.base import ServiceModelAdmin
from flags.forms import EnvironmentForm, MerchantForm, SegmentForm
from flags.models import Environment, Merchant, Segment


def _attributes_html(attributes: dict | None) -> str:
    if not attributes:
        return "-"
    return format_html(
        "<ul style='margin:0; padding-left:1em'>{}</ul>",
        format_html_join(
            "",
            "<li><strong>{}</strong>: {}</li>",
            (
                (name, _attribute_text(value))
                for name, value in sorted(attributes.items())
            ),
        ),
    )


def _attribute_text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(item) for item in value)
    return str(value)


@admin.register(Merchant)
class MerchantAdmin(ServiceModelAdmin):
    form = MerchantForm
    list_display = ["key", "name", "is_active", "attributes_list", "updated_at"]
    list_filter = ["is_active"]
    search_fields = ["key", "name"]
    actions = ["deactivate", "activate"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return ["key", "name", "is_active", "attributes"]
        return [
            "key",
            "name",
            "is_active",
            "attributes_list",
            "attributes",
            "created_at",
            "updated_at",
        ]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key", "attributes_list", "created_at", "updated_at"] if obj else []

    def service_create(self, actor: Actor, data: dict[str, Any]) -> Merchant:
        return services.merchant_create(
            actor=actor,
            key=data["key"],
            name=data.get("name", ""),
            attributes=data.get("attributes") or {},
            is_active=data["is_active"],
        )

    def service_update(
        self, actor: Actor, obj: Merchant, data: dict[str, Any]
    ) -> Merchant:
        return services.merchant_update(
            actor=actor,
            merchant=obj,
            name=data.get("name", ""),
            attributes=data.get("attributes") or {},
            is_active=data["is_active"],
        )

    @admin.display(description="attributes")
    def attributes_list(self, merchant: Merchant) -> str:
        return _attributes_html(merchant.attributes)

    @admin.action(description="Deactivate selected merchants")
    def deactivate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, is_active=False)

    @admin.action(description="Activate selected merchants")
    def activate(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_active(request, queryset, is_active=True)

    def _set_active(
        self, request: HttpRequest, queryset: QuerySet, *, is_active: bool
    ) -> None:
        actor = actor_for_user(request.user)
        keys = []
        for merchant in queryset:
            services.merchant_update(
                actor=actor, merchant=merchant, is_active=is_active
            )
            keys.append(merchant.key)
        verb = "Activated" if is_active else "Deactivated"
        self.message_user(
            request,
            f"{verb} {len(keys)} merchant(s): {', '.join(keys)}.",
            messages.SUCCESS,
        )


@admin.register(Segment)
class SegmentAdmin(ServiceModelAdmin):
    form = SegmentForm
    can_delete = True
    list_display = ["key", "name", "clause_summary", "updated_at"]
    search_fields = ["key", "name", "description"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return ["key"] if obj else []

    def service_create(self, actor: Actor, data: dict[str, Any]) -> Segment:
        return services.segment_create(
            actor=actor,
            key=data["key"],
            name=data["name"],
            clauses=data["clauses"],
            description=data.get("description", ""),
        )

    def service_update(
        self, actor: Actor, obj: Segment, data: dict[str, Any]
    ) -> Segment:
        return services.segment_update(
            actor=actor,
            segment=obj,
            name=data["name"],
            clauses=data["clauses"],
            description=data.get("description", ""),
        )

    def service_delete(self, actor: Actor, obj: Segment) -> None:
        services.segment_delete(actor=actor, segment=obj)

    @admin.display(description="clauses")
    def clause_summary(self, segment: Segment) -> str:
        parts = []
        for clause in segment.clauses or []:
            values = ", ".join(str(value) for value in clause.get("values", []))
            negate = "not " if clause.get("negate") else ""
            parts.append(
                f"{clause.get('attribute', '')} {negate}{clause.get('op')} [{values}]"
            )
        return " and ".join(parts) or "-"


@admin.register(Environment)
class EnvironmentAdmin(ServiceModelAdmin):
    form = EnvironmentForm
    list_display = ["key", "name", "sort_order", "ruleset_version", "created_at"]
    search_fields = ["key", "name"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["key", "name", "sort_order"]
        return fields + (["ruleset_version", "created_at"] if obj else [])

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # No service changes an environment after creation: the page is read-only.
        if obj is None:
            return []
        return ["key", "name", "sort_order", "ruleset_version", "created_at"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def service_create(self, actor: Actor, data: dict[str, Any]) -> Environment:
        return services.environment_create(
            actor=actor,
            key=data["key"],
            name=data["name"],
            sort_order=data["sort_order"],
        )
