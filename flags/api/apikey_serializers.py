"""Input and output serializers of the API key endpoints (flags/api/apikey_views.py)."""

from __future__ import annotations

from rest_framework import serializers

# -- API keys -----------------------------------------------------------------


class ApiKeyOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    scope = serializers.CharField()
    environment = serializers.CharField(
        source="environment.key", allow_null=True, default=None
    )
    user = serializers.CharField(source="user.username", allow_null=True, default=None)
    prefix = serializers.CharField(
        help_text="First characters of the key, for recognition."
    )
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)


class ApiKeyCreatedOutputSerializer(ApiKeyOutputSerializer):
    key = serializers.CharField(
        help_text="The raw key. Shown once, never stored: keep it now."
    )


class ApiKeyCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    scope = serializers.ChoiceField(choices=["server", "management"])
    environment = serializers.CharField(
        max_length=64,
        required=False,
        allow_null=True,
        default=None,
        help_text="Server keys: environment key.",
    )
    user = serializers.CharField(
        max_length=150,
        required=False,
        allow_null=True,
        default=None,
        help_text="Management keys: username of the service user.",
    )


class ApiKeyFilterSerializer(serializers.Serializer):
    scope = serializers.ChoiceField(choices=["server", "management"], required=False)
    include_revoked = serializers.BooleanField(required=False, default=False)
