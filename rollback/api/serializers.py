"""Input and output shapes of the rollback API (no business rules here)."""

from __future__ import annotations

from rest_framework import serializers

from rollback.models import Deployment, RollbackRun, RollbackStep, Trigger


class DeploymentInSerializer(serializers.Serializer):
    service = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=100)
    version = serializers.CharField(max_length=200)
    artifact = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    migration_state = serializers.DictField(
        required=False, allow_null=True, default=None
    )


class DeploymentOutSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key")
    previous_version = serializers.CharField(source="previous.version", default=None)

    class Meta:
        model = Deployment
        fields = [
            "id",
            "service",
            "environment",
            "version",
            "previous",
            "previous_version",
            "artifact",
            "status",
            "migration_state",
            "recorded_by",
            "deployed_at",
        ]


class FlagRestoreSerializer(serializers.Serializer):
    flag = serializers.CharField()
    environment = serializers.CharField()
    snapshot = serializers.DictField(required=False, allow_null=True, default=None)
    overrides = serializers.ListField(
        child=serializers.CharField(), required=False, allow_null=True, default=None
    )


class RollbackRunInSerializer(serializers.Serializer):
    level = serializers.IntegerField(min_value=1, max_value=3)
    reason = serializers.CharField(max_length=1000, allow_blank=True, default="")
    deployment = serializers.IntegerField(
        required=False, allow_null=True, default=None, min_value=1
    )
    flag_restore = FlagRestoreSerializer(required=False, allow_null=True, default=None)
    trigger = serializers.ChoiceField(choices=Trigger.choices, default=Trigger.MANUAL)
    trigger_ref = serializers.CharField(max_length=200, allow_blank=True, default="")
    backend = serializers.CharField(
        max_length=100, required=False, allow_null=True, default=None
    )


class RollbackStepOutSerializer(serializers.ModelSerializer):
    class Meta:
        model = RollbackStep
        fields = [
            "position",
            "level",
            "actuator",
            "params",
            "status",
            "attempts",
            "output",
            "error",
            "started_at",
            "finished_at",
        ]


class RollbackRunOutSerializer(serializers.ModelSerializer):
    steps = RollbackStepOutSerializer(many=True, read_only=True)
    requested_by = serializers.CharField(source="actor_name")

    class Meta:
        model = RollbackRun
        fields = [
            "id",
            "deployment",
            "level",
            "reason",
            "trigger",
            "trigger_ref",
            "status",
            "error",
            "requested_by",
            "created_at",
            "started_at",
            "finished_at",
            "steps",
        ]
