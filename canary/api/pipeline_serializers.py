"""Serializers of the pipeline API: shape and type only (the services
validate stages, environments and flags, each error naming its field)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from canary.models import Pipeline


class PipelineStageInputSerializer(serializers.Serializer):
    """One stage; ``pipeline_create`` checks the environment and plan."""

    environment = serializers.CharField(max_length=64)
    template = serializers.CharField(
        max_length=100, help_text="A named plan (GET /api/v1/rollout-templates)."
    )
    pilot_merchants = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False
    )
    duration_scale = serializers.FloatField(required=False)
    checks = serializers.JSONField(
        required=False, help_text="Health checks; none: the default check set."
    )
    check_template = serializers.CharField(max_length=120, required=False)
    phase_overrides = serializers.DictField(
        child=serializers.DictField(), required=False
    )


class PipelineCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    flag = serializers.CharField(
        max_length=100, required=False, help_text="One flag: each stage a rollout."
    )
    flags = serializers.ListField(
        child=serializers.CharField(max_length=100),
        required=False,
        help_text="Two or more flags: each stage a release.",
    )
    stages = PipelineStageInputSerializer(
        many=True, help_text="In order, e.g. staging then production."
    )
    requires_approval = serializers.BooleanField(
        required=False,
        default=False,
        help_text="Wait for someone other than the creator before each next stage.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("flag" in attrs) == ("flags" in attrs):
            raise serializers.ValidationError(
                {"flag": ["give either flag or flags, not both and not neither"]}
            )
        return attrs


class PipelineEvidenceCheckSerializer(serializers.Serializer):
    flag = serializers.CharField()
    check = serializers.CharField()
    status = serializers.CharField(allow_null=True)
    answer = serializers.CharField(allow_null=True)
    value = serializers.FloatField(allow_null=True)
    estimate = serializers.FloatField(allow_null=True)
    lower = serializers.FloatField(allow_null=True)
    upper = serializers.FloatField(allow_null=True)
    margin = serializers.FloatField(allow_null=True)


class PipelineStageOutputSerializer(serializers.Serializer):
    index = serializers.IntegerField()
    environment = serializers.CharField()
    kind = serializers.ChoiceField(choices=["rollout", "release"])
    target_id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField(allow_null=True)
    checks = PipelineEvidenceCheckSerializer(many=True)


class PipelineOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Pipeline
        fields = [
            "id",
            "name",
            "status",
            "requires_approval",
            "approved_by",
            "approved_at",
            "current_stage",
            "summary",
            "version",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]


class PipelineDetailOutputSerializer(PipelineOutputSerializer):
    stages = serializers.SerializerMethodField()

    class Meta(PipelineOutputSerializer.Meta):
        fields = [*PipelineOutputSerializer.Meta.fields, "stages"]

    @extend_schema_field(PipelineStageOutputSerializer(many=True))
    def get_stages(self, pipeline: Pipeline) -> list[dict]:
        from canary.services.pipeline_reads import pipeline_evidence

        return PipelineStageOutputSerializer(
            pipeline_evidence(pipeline), many=True
        ).data
