"""Serializers of the release API: shape and type only.

The member list, phases and checks are validated by the services
(``release_create`` and the rollout services it calls), so every error
names its field (``flags[1]``, ``phases[0].percentage``) the same way in
the API, the admin and the command.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from canary.api.serializers import ReasonInputSerializer
from canary.models import Release, Rollout

# -- input --------------------------------------------------------------------


class ReleaseCreateInputSerializer(serializers.Serializer):
    environment = serializers.CharField(max_length=64)
    flags = serializers.ListField(
        child=serializers.JSONField(),
        help_text='Flag keys, or {"flag": KEY, "treatment": VARIATION}; at least two.',
    )
    name = serializers.CharField(max_length=200, required=False)
    template = serializers.CharField(
        max_length=100, required=False, help_text="A named plan, e.g. pilot-10-50-100."
    )
    phases = serializers.JSONField(
        required=False, help_text="Without a template: the phases of every member."
    )
    pilot_merchants = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False
    )
    duration_scale = serializers.FloatField(required=False)
    phase_overrides = serializers.DictField(
        child=serializers.DictField(), required=False
    )
    checks = serializers.JSONField(required=False)
    check_template = serializers.CharField(
        max_length=120,
        required=False,
        help_text="A check template, NAME or NAME@VERSION: its checks come first.",
    )
    deployment = serializers.IntegerField(required=False, allow_null=True)
    max_level = serializers.IntegerField(min_value=1, max_value=3, required=False)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("template" in attrs) == ("phases" in attrs):
            raise serializers.ValidationError(
                {
                    "template": [
                        "give either a template or phases, not both and not neither"
                    ]
                }
            )
        if "phases" in attrs:
            for name in ("pilot_merchants", "duration_scale", "phase_overrides"):
                if name in attrs:
                    raise serializers.ValidationError(
                        {name: ["only used with a template"]}
                    )
        return attrs


class RequiredReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(max_length=500)


# -- output -------------------------------------------------------------------


class ReleaseOutputSerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key")
    # Plain strings in the schema: several models share the name "status".
    status = serializers.CharField(
        help_text="draft, running, completed, rolled_back, aborted"
    )
    member_count = serializers.IntegerField(read_only=True)
    deployed_count = serializers.IntegerField(
        read_only=True, help_text="Members completed (their feature is deployed)."
    )
    rolled_back_count = serializers.IntegerField(
        read_only=True, help_text="Members rolling back or rolled back."
    )

    class Meta:
        model = Release
        fields = [
            "id",
            "name",
            "environment",
            "status",
            "template",
            "member_count",
            "deployed_count",
            "rolled_back_count",
            "version",
            "created_by",
            "created_at",
            "started_at",
            "finished_at",
        ]


class ReleaseMemberOutputSerializer(serializers.ModelSerializer):
    rollout = serializers.IntegerField(source="pk")
    flag = serializers.CharField(source="flag.key")
    status = serializers.CharField(help_text="The member rollout's status.")
    phase_count = serializers.IntegerField(read_only=True)
    phase_name = serializers.CharField(read_only=True, allow_null=True)

    class Meta:
        model = Rollout
        fields = [
            "rollout",
            "flag",
            "status",
            "current_phase",
            "phase_count",
            "phase_name",
            "treatment_variation",
            "control_variation",
            "pause_reason",
            "started_at",
            "finished_at",
        ]


class ReleaseDetailOutputSerializer(ReleaseOutputSerializer):
    """A release with its members, its summary and the latest estimates."""

    # Set by the view from ``canary.release_selectors``.
    members = ReleaseMemberOutputSerializer(
        many=True, read_only=True, source="member_rows"
    )
    summary = serializers.JSONField(
        read_only=True,
        help_text="deployed, not_deployed, rolled_back [{flag, phase, reason, "
        "scope}], estimates (kept when the release ends).",
    )
    estimates = serializers.JSONField(
        read_only=True,
        source="estimates_now",
        help_text="Per flag and compare check, its last comparison: phase, "
        "decision, estimate, lower, upper, margin, treated/control merchants.",
    )

    class Meta(ReleaseOutputSerializer.Meta):
        fields = [
            *ReleaseOutputSerializer.Meta.fields,
            "summary",
            "members",
            "estimates",
        ]


__all__ = [
    "ReasonInputSerializer",
    "ReleaseCreateInputSerializer",
    "ReleaseDetailOutputSerializer",
    "ReleaseMemberOutputSerializer",
    "ReleaseOutputSerializer",
    "RequiredReasonInputSerializer",
]
