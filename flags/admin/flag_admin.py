"""Admin of flags, their per-environment states and merchant overrides."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.utils.html import format_html

from controlplane.audit.actors import Actor, actor_for_user
from flags import services
from flags.admin.base import (
    KILL,
    RESTORE,
    SET_PERCENTAGE,
    FlagStateInline,
    MerchantOverrideInline,
    ServiceModelAdmin,
    _adopt,
    _confirm_state_action,
    _link,
    state_serving,
    state_status,
)
from flags.admin.filters import (
    FlagKilledFilter,
    OverrideLiveFilter,
    StateKilledFilter,
    TagFilter,
)
from flags.admin.stale_filter import StaleFlagFilter
from flags.admin.targeting_admin import (
    STATE_FIELDSETS,
    flag_fieldsets,
    flag_page_context,
    overrides_apply,
    state_update_data,
)
from flags.admin.targeting_forms import TargetingFlagForm, TargetingFlagStateForm
from flags.changes import gate
from flags.forms import MerchantOverrideForm
from flags.models import Flag, FlagState, MerchantOverride

# -- model admins ------------------------------------------------------------------------


@admin.register(Flag)
class FlagAdmin(ServiceModelAdmin):
    form = TargetingFlagForm
    list_display = ["key", "name", "value_type", "environments", "archived", "tag_list"]
    list_filter = [
        "value_type",
        "archived",
        TagFilter,
        FlagKilledFilter,
        StaleFlagFilter,
    ]
    search_fields = ["key", "name", "description", "owner"]
    inlines = [FlagStateInline, MerchantOverrideInline]
    actions = [
        "kill_in_environment",
        "restore_in_environment",
        "set_percentage_in_environment",
        "archive",
        "unarchive",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("states__environment")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict | None = None,
    ) -> HttpResponse:
        context, status = flag_page_context(
            request, self.get_object(request, object_id)
        )
        response = super().change_view(
            request, object_id, form_url, {**(extra_context or {}), **context}
        )
        if status != 200 and response.status_code == 200:
            response.status_code = status
        return response

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list:
        return self.inlines if obj is not None else []  # states come with the flag

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return [
                "key",
                "name",
                "value_type",
                "variations",
                "off_variation",
                "description",
                "owner",
                "tags",
            ]
        return [
            "key",
            "value_type",
            "name",
            "variations",
            "description",
            "owner",
            "tags",
            "archived",
            "created_at",
            "updated_at",
        ]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> list:
        return flag_fieldsets(self.get_fields(request, obj))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        return ["key", "value_type", "archived", "created_at", "updated_at"]

    def service_create(self, actor: Actor, data: dict[str, Any]) -> Flag:
        return services.flag_create(
            actor=actor,
            key=data["key"],
            name=data["name"],
            value_type=data["value_type"],
            variations=data.get("variations"),
            off_variation=data.get("off_variation") or None,
            description=data.get("description", ""),
            owner=data.get("owner", ""),
            tags=data.get("tags") or [],
        )

    def service_update(self, actor: Actor, obj: Flag, data: dict[str, Any]) -> Flag:
        return services.flag_update(
            actor=actor,
            flag=obj,
            name=data["name"],
            description=data.get("description", ""),
            owner=data.get("owner", ""),
            tags=data.get("tags") or [],
            variations=data["variations"],
        )

    @admin.display(description="environments")
    def environments(self, flag: Flag) -> str:
        states = sorted(
            flag.states.all(),
            key=lambda s: (s.environment.sort_order, s.environment.key),
        )
        return (
            " / ".join(f"{s.environment.key}: {state_status(s)}" for s in states) or "-"
        )

    @admin.display(description="tags")
    def tag_list(self, flag: Flag) -> str:
        return ", ".join(flag.tags or [])

    @admin.action(description="Kill switch in an environment…")
    def kill_in_environment(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return _confirm_state_action(self, request, queryset, KILL, by_environment=True)

    @admin.action(description="Restore (after a kill) in an environment…")
    def restore_in_environment(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return _confirm_state_action(
            self, request, queryset, RESTORE, by_environment=True
        )

    @admin.action(description="Set rollout percentage in an environment…")
    def set_percentage_in_environment(
        self, request: HttpRequest, queryset: QuerySet
    ) -> Any:
        return _confirm_state_action(
            self, request, queryset, SET_PERCENTAGE, by_environment=True
        )

    @admin.action(description="Archive selected flags")
    def archive(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_archived(request, queryset, archived=True)

    @admin.action(description="Unarchive selected flags")
    def unarchive(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._set_archived(request, queryset, archived=False)

    def _set_archived(
        self, request: HttpRequest, queryset: QuerySet, *, archived: bool
    ) -> None:
        actor = actor_for_user(request.user)
        keys = []
        for flag in queryset:
            services.flag_archive(actor=actor, flag=flag, archived=archived)
            keys.append(flag.key)
        verb = "Archived" if archived else "Unarchived"
        self.message_user(
            request, f"{verb} {len(keys)} flag(s): {', '.join(keys)}.", messages.SUCCESS
        )


@admin.register(FlagState)
class FlagStateAdmin(ServiceModelAdmin):
    form = TargetingFlagStateForm
    list_display = [
        "__str__",
        "flag_link",
        "environment",
        "status",
        "version",
        "updated_at",
    ]
    list_filter = ["environment", StateKilledFilter, "enabled", "flag__archived"]
    search_fields = ["flag__key", "flag__name"]
    list_select_related = ["flag", "environment"]
    actions = ["kill", "restore", "set_percentage"]
    fieldsets = STATE_FIELDSETS
    readonly_fields = [
        "flag",
        "environment",
        "kill_state",
        "serving",
        "current_version",
    ]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # a state exists per flag x environment, made by the services

    def save_model(
        self, request: HttpRequest, obj: FlagState, form: Any, change: bool
    ) -> None:
        """Save the serving fields, then each changed override row.

        Rows that need approval become change requests (shown as messages);
        serving fields that need approval refuse the save (a form error).
        """
        actor = actor_for_user(request.user)
        data = form.cleaned_data
        wanted = state_update_data(data)
        current = FlagState.objects.get(pk=obj.pk)
        if any(
            getattr(current, name) != value
            for name, value in wanted.items()
            if name != "expected_version"
        ):
            gate.refuse_if_gated(
                operation="flag_state.update", environment=obj.environment.key
            )
        # unchanged fields: no write and no event, but the version is checked
        state = services.flag_state_update(
            actor=actor, flag=obj.flag, environment=obj.environment, **wanted
        )
        pending = overrides_apply(
            actor=actor, state=state, wanted=data.get("overrides_rows")
        )
        for change_request in pending:
            self.message_user(
                request, gate.pending_message_html(change_request), messages.WARNING
            )
        _adopt(obj, state)

    @admin.display(description="flag", ordering="flag__key")
    def flag_link(self, state: FlagState) -> str:
        return _link(state.flag, state.flag.key)

    @admin.display(description="status")
    def status(self, state: FlagState) -> str:
        return state_status(state)

    @admin.display(description="serves by default")
    def serving(self, state: FlagState) -> str:
        return state_serving(state)

    @admin.display(description="version")
    def current_version(self, state: FlagState) -> int:
        return state.version

    @admin.display(description="kill switch")
    def kill_state(self, state: FlagState) -> str:
        if state.killed_at is None:
            return "not killed"
        return format_html(
            '<strong style="color:#ba2121">KILLED</strong> at {} &middot; reason: {}',
            state.killed_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            state.kill_reason or "(none given)",
        )

    @admin.action(description="Kill switch…")
    def kill(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return _confirm_state_action(
            self, request, queryset, KILL, by_environment=False
        )

    @admin.action(description="Restore (after a kill)…")
    def restore(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return _confirm_state_action(
            self, request, queryset, RESTORE, by_environment=False
        )

    @admin.action(description="Set rollout percentage…")
    def set_percentage(self, request: HttpRequest, queryset: QuerySet) -> Any:
        return _confirm_state_action(
            self, request, queryset, SET_PERCENTAGE, by_environment=False
        )


@admin.register(MerchantOverride)
class MerchantOverrideAdmin(ServiceModelAdmin):
    form = MerchantOverrideForm
    can_delete = True
    list_display = [
        "__str__",
        "flag",
        "environment",
        "merchant",
        "variation",
        "expiry",
        "created_by",
        "updated_at",
    ]
    list_filter = ["flag", "environment", OverrideLiveFilter]
    search_fields = ["merchant__key", "merchant__name", "flag__key", "note"]
    list_select_related = ["flag", "environment", "merchant"]
    autocomplete_fields = ["flag", "merchant"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fields = ["flag", "environment", "merchant", "variation", "note", "expires_at"]
        return fields + (["created_by", "created_at", "updated_at"] if obj else [])

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        # A different flag, environment or merchant is another override.
        if obj is None:
            return []
        return [
            "flag",
            "environment",
            "merchant",
            "created_by",
            "created_at",
            "updated_at",
        ]

    def service_create(self, actor: Actor, data: dict[str, Any]) -> MerchantOverride:
        gate.refuse_if_gated(
            operation="override.set", environment=data["environment"].key
        )
        return services.override_set(
            actor=actor,
            flag=data["flag"],
            environment=data["environment"],
            merchant=data["merchant"],
            variation=data["variation"],
            note=data.get("note", ""),
            expires_at=data.get("expires_at"),
        )

    def service_update(
        self, actor: Actor, obj: MerchantOverride, data: dict[str, Any]
    ) -> MerchantOverride:
        gate.refuse_if_gated(operation="override.set", environment=obj.environment.key)
        return services.override_set(
            actor=actor,
            flag=obj.flag,
            environment=obj.environment,
            merchant=obj.merchant,
            variation=data["variation"],
            note=data.get("note", ""),
            expires_at=data.get("expires_at"),
        )

    def service_delete(self, actor: Actor, obj: MerchantOverride) -> None:
        gate.refuse_if_gated(
            operation="override.remove", environment=obj.environment.key
        )
        services.override_remove(
            actor=actor,
            flag=obj.flag,
            environment=obj.environment,
            merchant=obj.merchant,
            reason="removed in the admin",
        )

    @admin.display(description="expires", ordering="expires_at")
    def expiry(self, override: MerchantOverride) -> str:
        if override.expires_at is None:
            return "never"
        when = override.expires_at.strftime("%Y-%m-%d %H:%M UTC")
        if override.is_live(timezone.now()):
            return when
        return format_html('<span style="color:#ba2121">expired {}</span>', when)
