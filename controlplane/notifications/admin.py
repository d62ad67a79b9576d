"""Admin: destinations (secrets write-only) and read-only deliveries.

Every change goes through ``services``; the form checks the same rules up
front (``validate_*``), so the service never refuses a valid form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils.html import format_html

from controlplane.audit.actors import actor_for_user
from controlplane.audit.admin import ReadOnlyAdminMixin
from controlplane.exceptions import DomainError
from controlplane.notifications import services
from controlplane.notifications.models import (
    Channel,
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    Destination,
    Kind,
)

STATUS_COLOURS = {
    DeliveryStatus.PENDING: "#666666",
    DeliveryStatus.RETRYING: "#b26a00",
    DeliveryStatus.DELIVERED: "#1e7e34",
    DeliveryStatus.FAILED: "#ba2121",
}


class DestinationForm(forms.ModelForm):
    url = forms.CharField(
        required=False,
        max_length=services.MAX_URL_LENGTH,
        strip=True,
        widget=forms.TextInput(attrs={"size": 80, "autocomplete": "off"}),
        help_text=(
            "Webhook: an http(s) URL. Apprise: e.g. slack://…, msteams://…, "
            "mailto://…, json://host/path. Write-only: never shown again; "
            "leave blank to keep the stored one."
        ),
    )
    kinds = forms.MultipleChoiceField(
        choices=Kind.choices,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="What this destination hears about.",
    )

    class Meta:
        model = Destination
        fields = ("name", "environment", "channel", "url", "kinds", "is_enabled")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.initial["url"] = ""  # write-only: the stored URL is not sent back
        if self.instance.pk is None:
            self.fields["url"].required = True
            self.initial.setdefault("kinds", list(Kind.values))
        else:
            for name in ("environment", "channel"):
                self.fields[name].disabled = True

    def clean_name(self) -> str:
        return _field(services.validate_name, self.cleaned_data.get("name"))

    def clean_kinds(self) -> list[str]:
        return _field(services.validate_kinds, self.cleaned_data.get("kinds") or [])

    def clean(self) -> dict:
        data = super().clean()
        channel = data.get("channel") or self.instance.channel
        url = data.get("url")
        if url:
            try:
                data["url"] = services.validate_url(channel, url)
            except DomainError as exc:
                self.add_error("url", exc.message.removeprefix("url: "))
        return data


def _field(check: Any, value: Any) -> Any:
    try:
        return check(value)
    except DomainError as exc:
        raise forms.ValidationError(exc.message.split(": ", 1)[-1]) from None


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    extra = 0
    can_delete = False
    fields = (
        "number",
        "started_at",
        "duration_ms",
        "is_ok",
        "status_code",
        "error",
        "answer",
    )
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _status_badge(status: str) -> str:
    colour = STATUS_COLOURS.get(status, "#666666")
    return format_html(
        '<strong style="color:{}">{}</strong>', colour, DeliveryStatus(status).label
    )


@admin.register(Destination)
class DestinationAdmin(admin.ModelAdmin):
    form = DestinationForm
    list_display = (
        "name",
        "environment",
        "channel",
        "shown_url",
        "secret_status",
        "kinds_list",
        "is_enabled",
    )
    list_filter = ("environment", "channel", "is_enabled")
    search_fields = ("name",)
    readonly_fields = ("shown_url", "secret_status", "created_at", "updated_at")
    actions = ["send_test", "rotate_secret", "disable"]

    def get_fields(self, request: HttpRequest, obj: Any = None) -> tuple:
        fields = ("name", "environment", "channel", "url", "kinds", "is_enabled")
        return fields if obj is None else (*fields, *self.readonly_fields)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # deliveries keep pointing at it; disable instead

    @admin.display(description="URL")
    def shown_url(self, obj: Destination) -> str:
        return obj.url_display

    @admin.display(description="secret")
    def secret_status(self, obj: Destination) -> str:
        if obj.channel != Channel.WEBHOOK:
            return "in the URL (write-only)"
        return f"set ({obj.secret_prefix})" if obj.secret else "not set"

    @admin.display(description="kinds")
    def kinds_list(self, obj: Destination) -> str:
        if set(obj.kinds) == set(Kind.values):
            return "all"
        return ", ".join(obj.kinds) or "none"

    def save_model(
        self, request: HttpRequest, obj: Destination, form: Any, change: bool
    ) -> None:
        actor = actor_for_user(request.user)
        data = form.cleaned_data
        try:
            if change:
                saved = services.destination_update(
                    actor=actor,
                    destination=obj,
                    name=data["name"],
                    url=data.get("url") or None,
                    kinds=data["kinds"],
                    is_enabled=data["is_enabled"],
                )
                secret = ""
            else:
                saved, secret = services.destination_create(
                    actor=actor,
                    name=data["name"],
                    environment=data["environment"],
                    channel=data["channel"],
                    url=data["url"],
                    kinds=data["kinds"],
                    is_enabled=data["is_enabled"],
                )
        except DomainError as exc:
            self.message_user(request, f"Not saved: {exc.message}", messages.ERROR)
            return
        obj.pk = saved.pk
        obj.__dict__.update(saved.__dict__)
        if secret:
            self.message_user(
                request,
                f"Webhook secret (copy it now, it is not shown again): {secret}",
                messages.WARNING,
            )

    @admin.action(description="Send a test notification")
    def send_test(self, request: HttpRequest, queryset: Any) -> None:
        for destination in queryset:
            delivery = services.destination_send_test(
                actor=actor_for_user(request.user), destination=destination
            )
            delivery.refresh_from_db()
            level = (
                messages.SUCCESS
                if delivery.status == DeliveryStatus.DELIVERED
                else messages.WARNING
            )
            detail = f": {delivery.last_error}" if delivery.last_error else ""
            self.message_user(
                request,
                f"Test to {destination.name}: {delivery.get_status_display().lower()}{detail}",
                level,
            )

    @admin.action(description="Rotate the webhook secret (shown once)")
    def rotate_secret(self, request: HttpRequest, queryset: Any) -> None:
        for destination in queryset:
            try:
                secret = services.destination_rotate_secret(
                    actor=actor_for_user(request.user), destination=destination
                )
            except DomainError as exc:
                self.message_user(
                    request, f"{destination.name}: {exc.message}", messages.ERROR
                )
                continue
            self.message_user(
                request,
                f"New secret of {destination.name} (copy it now, it is not shown again): {secret}",
                messages.WARNING,
            )

    @admin.action(description="Disable selected destinations")
    def disable(self, request: HttpRequest, queryset: Any) -> None:
        for destination in queryset:
            services.destination_disable(
                actor=actor_for_user(request.user), destination=destination
            )
        self.message_user(request, f"{queryset.count()} destination(s) disabled.")


@admin.register(Delivery)
class DeliveryAdmin(ReadOnlyAdminMixin, admin.ModelAdmin):
    list_display = (
        "id",
        "created_at",
        "kind",
        "destination",
        "coloured_status",
        "attempts",
        "last_error",
    )
    list_filter = ("status", "kind", "destination__environment")
    search_fields = ("message",)
    list_select_related = ("destination",)
    fields = (
        "destination",
        "kind",
        "coloured_status",
        "attempts",
        "message",
        "body",
        "audit_event",
        "created_at",
        "next_attempt_at",
        "delivered_at",
        "last_error",
    )
    readonly_fields = fields
    inlines = [DeliveryAttemptInline]

    @admin.display(description="status", ordering="status")
    def coloured_status(self, obj: Delivery) -> str:
        return _status_badge(obj.status)
