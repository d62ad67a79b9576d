"""Input and output serializers of the management API.

Input serializers check shape and type only; every rule that needs the
database or other objects is the services' job. Output serializers are
read-only views of rows.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from flags.models import (
    Environment,
    Flag,
    FlagState,
    Merchant,
    Segment,
)

MAX_INT = 2_147_483_647  # PositiveIntegerField's ceiling on every database
MAX_RULES = 200  # rules in one flag state
MAX_CLAUSES = 50  # clauses in one rule or segment


def _reject_nul(value: Any, path: str = "") -> None:
    """Refuse NUL characters anywhere in JSON (PostgreSQL cannot store them)."""
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(
                f"{path or 'value'}: NUL characters are not allowed"
            )
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_nul(item, f"{path}[{index}]")


class JsonObjectField(serializers.JSONField):
    """A JSON object (attributes and similar)."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise serializers.ValidationError("Must be an object.")
        _reject_nul(value)
        return value


class JsonListField(serializers.JSONField):
    """A JSON list of objects (rules, clauses, variations)."""

    max_items: int | None = None

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not isinstance(value, list):
            raise serializers.ValidationError("Must be a list.")
        if self.max_items is not None and len(value) > self.max_items:
            raise serializers.ValidationError(f"At most {self.max_items} items.")
        _reject_nul(value)
        return value


# -- schema helpers for JSON-shaped fields -----------------------------------

CLAUSE_SCHEMA = {
    "type": "object",
    "properties": {
        "attribute": {"type": "string"},
        "op": {
            "type": "string",
            "enum": [
                "in",
                "starts_with",
                "ends_with",
                "contains",
                "matches",
                "lt",
                "lte",
                "gt",
                "gte",
                "exists",
                "segment",
            ],
        },
        "values": {
            "type": "array",
            "items": {
                "oneOf": [
                    {"type": "string"},
                    {"type": "number"},
                    {"type": "boolean"},
                ]
            },
        },
        "negate": {"type": "boolean"},
    },
    "required": ["op"],
}
SERVE_SCHEMA = {
    "type": "object",
    "description": '{"variation": key} or {"split": [{"variation": key, "weight": n}, ...]}'
    " with weights in thousandths of a percent summing to 100000.",
    "properties": {
        "variation": {"type": "string"},
        "split": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "variation": {"type": "string"},
                    "weight": {"type": "integer"},
                },
                "required": ["variation", "weight"],
            },
        },
    },
}
RULE_SCHEMA = {
    "type": "object",
    "properties": {
        "clauses": {"type": "array", "items": CLAUSE_SCHEMA, "maxItems": MAX_CLAUSES},
        "serve": SERVE_SCHEMA,
        "description": {"type": "string"},
    },
    "required": ["clauses", "serve"],
}
VARIATION_SCHEMA = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "value": {}, "name": {"type": "string"}},
    "required": ["key", "value"],
}
ATTRIBUTES_SCHEMA = {"type": "object", "additionalProperties": True}


@extend_schema_field({"type": "array", "items": CLAUSE_SCHEMA, "maxItems": MAX_CLAUSES})
class ClausesField(JsonListField):
    max_items = MAX_CLAUSES


@extend_schema_field({"type": "array", "items": RULE_SCHEMA, "maxItems": MAX_RULES})
class RulesField(JsonListField):
    max_items = MAX_RULES


@extend_schema_field(SERVE_SCHEMA)
class ServeField(JsonObjectField):
    pass


@extend_schema_field({"type": "array", "items": VARIATION_SCHEMA})
class VariationsField(JsonListField):
    pass


@extend_schema_field(ATTRIBUTES_SCHEMA)
class AttributesField(JsonObjectField):
    pass


# -- errors -------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable code, e.g. invalid, not_found."
    )
    message = serializers.CharField(help_text="One human-readable line.")
    errors = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Field path -> messages; empty when not about a field.",
    )


class VersionConflictSerializer(ErrorSerializer):
    current_version = serializers.IntegerField()


# -- environments -------------------------------------------------------------


class EnvironmentOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Environment
        fields = ["key", "name", "sort_order", "ruleset_version", "created_at"]
        read_only_fields = fields


class EnvironmentCreateInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    sort_order = serializers.IntegerField(
        min_value=0, max_value=MAX_INT, required=False, default=0
    )


# -- merchants ----------------------------------------------------------------


class MerchantOutputSerializer(serializers.ModelSerializer):
    attributes = AttributesField(read_only=True)

    class Meta:
        model = Merchant
        fields = ["key", "name", "is_active", "attributes", "created_at", "updated_at"]
        read_only_fields = fields


class MerchantFilterSerializer(serializers.Serializer):
    search = serializers.CharField(
        required=False,
        max_length=200,
        help_text="Part of the key or name (case-insensitive).",
    )
    is_active = serializers.BooleanField(required=False, allow_null=True, default=None)


class MerchantCreateInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=128)
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    attributes = AttributesField(required=False, default=dict)
    is_active = serializers.BooleanField(required=False, default=True)


class MerchantUpdateInputSerializer(serializers.Serializer):
    """PUT sends every field; PATCH any of them."""

    name = serializers.CharField(max_length=200, allow_blank=True)
    attributes = AttributesField()
    is_active = serializers.BooleanField()


class MerchantBulkItemSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=128)
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    attributes = AttributesField(required=False, default=dict)
    is_active = serializers.BooleanField(required=False, default=True)


class MerchantBulkUpsertInputSerializer(serializers.Serializer):
    merchants = MerchantBulkItemSerializer(
        many=True,
        allow_empty=False,
        help_text="Up to MERCHANT_BULK_UPSERT_MAX (1000) merchants, created or updated by key.",
    )


class MerchantBulkUpsertOutputSerializer(serializers.Serializer):
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    unchanged = serializers.IntegerField()


# -- segments -----------------------------------------------------------------


class SegmentOutputSerializer(serializers.ModelSerializer):
    clauses = ClausesField(read_only=True)

    class Meta:
        model = Segment
        fields = ["key", "name", "description", "clauses", "created_at", "updated_at"]
        read_only_fields = fields


class SegmentCreateInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=64)
    name = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    clauses = ClausesField()


class SegmentUpdateInputSerializer(serializers.Serializer):
    """PUT sends every field; PATCH any of them."""

    name = serializers.CharField(max_length=100, allow_blank=True)
    description = serializers.CharField(allow_blank=True)
    clauses = ClausesField()


# -- flags --------------------------------------------------------------------


class FlagStateSummarySerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key", read_only=True)
    percentage = serializers.FloatField(read_only=True, allow_null=True)
    is_killed = serializers.SerializerMethodField()

    class Meta:
        model = FlagState
        fields = ["environment", "enabled", "is_killed", "percentage", "version"]
        read_only_fields = fields

    def get_is_killed(self, state: FlagState) -> bool:
        return state.killed_at is not None


class FlagOutputSerializer(serializers.ModelSerializer):
    variations = VariationsField(read_only=True)
    tags = serializers.ListField(child=serializers.CharField(), read_only=True)
    states = FlagStateSummarySerializer(many=True, read_only=True)

    class Meta:
        model = Flag
        fields = [
            "key",
            "name",
            "description",
            "value_type",
            "variations",
            "owner",
            "tags",
            "archived",
            "created_at",
            "updated_at",
            "states",
        ]
        read_only_fields = fields


class FlagFilterSerializer(serializers.Serializer):
    include_archived = serializers.BooleanField(required=False, default=False)
    tag = serializers.CharField(required=False, max_length=100)


class FlagCreateInputSerializer(serializers.Serializer):
    key = serializers.CharField(max_length=100)
    name = serializers.CharField(
        max_length=200, required=False, allow_blank=True, default=""
    )
    value_type = serializers.ChoiceField(
        choices=["bool", "string", "number", "json"], required=False, default="bool"
    )
    variations = VariationsField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Required unless the flag is bool (on/off).",
    )
    off_variation = serializers.CharField(
        max_length=100, required=False, allow_null=True, default=None
    )
    description = serializers.CharField(required=False, allow_blank=True, default="")
    owner = serializers.CharField(
        max_length=100, required=False, allow_blank=True, default=""
    )
    tags = serializers.ListField(
        child=serializers.CharField(max_length=100), required=False, default=list
    )


class FlagUpdateInputSerializer(serializers.Serializer):
    """PUT sends every field; PATCH any of them. Key and value type never change."""

    name = serializers.CharField(max_length=200)
    description = serializers.CharField(allow_blank=True)
    owner = serializers.CharField(max_length=100, allow_blank=True)
    tags = serializers.ListField(child=serializers.CharField(max_length=100))
    variations = VariationsField()


# -- flag states --------------------------------------------------------------


class FlagStateOutputSerializer(serializers.ModelSerializer):
    flag = serializers.CharField(source="flag.key", read_only=True)
    environment = serializers.CharField(source="environment.key", read_only=True)
    rules = RulesField(read_only=True)
    fallthrough = ServeField(read_only=True)
    percentage = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = FlagState
        fields = [
            "flag",
            "environment",
            "enabled",
            "off_variation",
            "rules",
            "fallthrough",
            "bucket_by",
            "percentage",
            "killed_at",
            "kill_reason",
            "version",
            "updated_at",
        ]
        read_only_fields = fields


class FlagStateUpdateInputSerializer(serializers.Serializer):
    """``version`` is always required: the edit is refused if the state moved.

    PUT sends every serving field; PATCH any of them.
    """

    version = serializers.IntegerField(
        min_value=1, max_value=MAX_INT, help_text="The version the edit is based on."
    )
    enabled = serializers.BooleanField()
    off_variation = serializers.CharField(max_length=100)
    rules = RulesField()
    fallthrough = ServeField()
    bucket_by = serializers.CharField(max_length=64)

    def validate(self, attrs: dict) -> dict:
        if "version" not in attrs:  # PATCH is partial, but never without a version
            raise serializers.ValidationError({"version": ["This field is required."]})
        return attrs


class FlagStateKillInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )


class FlagStateVersionInputSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=1,
        max_value=MAX_INT,
        required=False,
        allow_null=True,
        default=None,
        help_text="Optional: refuse the change if the state is no longer at this version.",
    )


class FlagStatePercentageInputSerializer(FlagStateVersionInputSerializer):
    percentage = serializers.FloatField(min_value=0, max_value=100)
    treatment = serializers.CharField(
        max_length=100, required=False, allow_null=True, default=None
    )
    control = serializers.CharField(
        max_length=100, required=False, allow_null=True, default=None
    )


class FlagStateServeInputSerializer(FlagStateVersionInputSerializer):
    variation = serializers.CharField(max_length=100)
