"""Admin for API keys: create through the service, shown once; revoke action."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages

from controlplane.apikeys import services
from controlplane.apikeys.models import ApiKey
from controlplane.audit.actors import actor_for_user
from controlplane.exceptions import DomainError


class ApiKeyCreateForm(forms.ModelForm):
    """Check the scope rules up front, so the service never refuses a valid form."""

    class Meta:
        model = ApiKey
        fields = ("name", "scope", "environment", "user")

    def clean(self):
        data = super().clean()
        scope = data.get("scope")
        if scope == "server" and not data.get("environment"):
            self.add_error("environment", "A server key belongs to one environment.")
        if scope == "management":
            if data.get("environment"):
                self.add_error("environment", "A management key has no environment.")
            if not data.get("user"):
                self.add_error(
                    "user", "A management key carries a service user's permissions."
                )
        return data


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    add_form = ApiKeyCreateForm
    list_display = (
        "name",
        "scope",
        "environment",
        "user",
        "prefix",
        "created_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("scope", "environment")
    search_fields = ("name", "prefix")
    fields = ("name", "scope", "environment", "user")
    readonly_fields = (
        "prefix",
        "created_at",
        "created_by",
        "last_used_at",
        "revoked_at",
    )
    actions = ["revoke_keys"]

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = self.add_form
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return self.fields
        return (*self.fields, *self.readonly_fields)

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return (*self.fields, *self.readonly_fields)

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def save_model(self, request, obj, form, change) -> None:
        if change:
            return
        try:
            created, raw = services.apikey_create(
                actor=actor_for_user(request.user),
                name=obj.name,
                scope=obj.scope,
                environment=obj.environment,
                user=obj.user,
            )
        except DomainError as exc:
            self.message_user(
                request, f"Key not created: {exc.message}", messages.ERROR
            )
            return
        obj.pk = created.pk
        obj.__dict__.update(created.__dict__)
        self.message_user(
            request,
            f"Key created. Copy it now, it is not shown again: {raw}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke_keys(self, request, queryset) -> None:
        count = 0
        for api_key in queryset:
            if api_key.revoked_at is None:
                services.apikey_revoke(
                    actor=actor_for_user(request.user), api_key=api_key
                )
                count += 1
        self.message_user(request, f"{count} key(s) revoked.")
