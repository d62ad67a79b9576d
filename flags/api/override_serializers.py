"""Input and output serializers of the override endpoints (flags/api/state_views.py)."""

from __future__ import annotations

from django.utils import timezone
from rest_framework import serializers

from flags.models import MerchantOverride

# -- overrides ----------------------------------------------------------------


class OverrideOutputSerializer(serializers.ModelSerializer):
    flag = serializers.CharField(source="flag.key", read_only=True)
    environment = serializers.CharField(source="environment.key", read_only=True)
    merchant = serializers.CharField(source="merchant.key", read_only=True)
    is_live = serializers.SerializerMethodField()

    class Meta:
        model = MerchantOverride
        fields = [
            "flag",
            "environment",
            "merchant",
            "variation",
            "note",
            "expires_at",
            "is_live",
            "created_by",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields

    def get_is_live(self, override: MerchantOverride) -> bool:
        return override.is_live(timezone.now())


class OverrideFilterSerializer(serializers.Serializer):
    live_only = serializers.BooleanField(required=False, default=False)


class OverrideSetInputSerializer(serializers.Serializer):
    variation = serializers.CharField(max_length=100)
    note = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    expires_at = serializers.DateTimeField(
        required=False, allow_null=True, default=None
    )


class OverrideRemoveInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
