"""Serializers of the rollout management API: shape and type only.

Phases and checks are taken as JSON and validated by the services
(``phases_clean``, ``checks_clean``) so that every error names its field
(``phases[2].percentage``) the same way in the API, the admin and commands.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from canary.models import CheckRun, CheckTemplate, HealthCheck, Phase, Rollout
from canary.services.definitions import CHECK_FIELDS

# -- input --------------------------------------------------------------------


class RolloutCreateInputSerializer(serializers.Serializer):
    flag = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=200, required=False)
    template = serializers.CharField(
        max_length=100, required=False, help_text="A named plan, e.g. pilot-10-50-100."
    )
    pilot_merchants = serializers.ListField(
        child=serializers.CharField(max_length=128), required=False
    )
    duration_scale = serializers.FloatField(required=False)
    phase_overrides = serializers.DictField(
        child=serializers.DictField(), required=False
    )
    phases = serializers.JSONField(
        required=False, help_text="Without a template: the phases."
    )
    checks = serializers.JSONField(required=False)
    check_template = serializers.CharField(
        max_length=120,
        required=False,
        help_text="A check template, NAME or NAME@VERSION: its checks come first.",
    )
    deployment = serializers.IntegerField(required=False, allow_null=True)
    treatment = serializers.CharField(max_length=100, required=False)
    control = serializers.CharField(max_length=100, required=False)
    max_level = serializers.IntegerField(
        min_value=1,
        max_value=3,
        required=False,
        help_text="The highest rollback level the rollout may reach (default 3).",
    )

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
            if "name" not in attrs:
                raise serializers.ValidationError(
                    {"name": ["required without a template"]}
                )
        return attrs


class ReasonInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )


class ApproveInputSerializer(ReasonInputSerializer):
    expected_phase = serializers.IntegerField(
        min_value=0, required=False, help_text="Ignored if the rollout moved on."
    )


class FailPhaseInputSerializer(ReasonInputSerializer):
    on_failure = serializers.ChoiceField(
        choices=["pause", "rollback_1", "rollback_2", "rollback_3"],
        required=False,
        help_text="Default: the most severe on_failure of the rollout's checks.",
    )


class RollbackInputSerializer(ReasonInputSerializer):
    level = serializers.IntegerField(min_value=1, max_value=3)


class CheckInputSerializer(serializers.Serializer):
    """A health check as JSON; ``checks_clean`` validates the fields."""

    def to_internal_value(self, data: Any) -> dict:
        if not isinstance(data, dict):
            raise serializers.ValidationError({"": ["send a JSON object"]})
        return dict(data)


# -- output -------------------------------------------------------------------


class PhaseOutputSerializer(serializers.ModelSerializer):
    class Meta:
        model = Phase
        fields = [
            "index",
            "name",
            "target_type",
            "percentage",
            "pilot_merchants",
            "min_duration",
            "max_duration",
            "requires_approval",
            "gate",
        ]


class CheckRunOutputSerializer(serializers.ModelSerializer):
    check_name = serializers.CharField(source="health_check.name")
    check_id = serializers.IntegerField(source="health_check_id")

    class Meta:
        model = CheckRun
        fields = [
            "id",
            "check_id",
            "check_name",
            "phase_index",
            "value",
            "verdict",
            "detail",
            "measured_at",
        ]


class HealthCheckOutputSerializer(serializers.ModelSerializer):
    # Plain strings in the schema: several models share these choice names.
    status = serializers.CharField(
        help_text="pending, passing, failed, inconclusive, errored"
    )
    last_verdict = serializers.CharField(
        help_text="pass, fail, inconclusive, error, not_yet, or empty"
    )

    class Meta:
        model = HealthCheck
        fields = [
            "id",
            *CHECK_FIELDS,
            "status",
            "state_phase",
            "pass_count",
            "consecutive_failures",
            "consecutive_errors",
            "inconclusive_count",
            "last_verdict",
            "last_value",
            "last_run_at",
            "next_due_at",
        ]


class RolloutOutputSerializer(serializers.ModelSerializer):
    flag = serializers.CharField(source="flag.key")
    environment = serializers.CharField(source="environment.key")

    class Meta:
        model = Rollout
        fields = [
            "id",
            "name",
            "flag",
            "environment",
            "status",
            "current_phase",
            "phase_started_at",
            "treatment_variation",
            "control_variation",
            "approved_phase",
            "pause_reason",
            "max_level",
            "check_template",
            "version",
            "deployment",
            "started_at",
            "finished_at",
            "created_by",
            "created_at",
            "updated_at",
        ]


class RolloutDetailOutputSerializer(RolloutOutputSerializer):
    """A rollout with its phases, checks, latest check runs and the
    explanation of the last automatic or manual decision."""

    phases = PhaseOutputSerializer(many=True, read_only=True)
    checks = HealthCheckOutputSerializer(many=True, read_only=True)
    latest_check_runs = serializers.SerializerMethodField()
    last_decision = serializers.SerializerMethodField()
    gate = serializers.SerializerMethodField(
        help_text="What the current phase waits for."
    )
    baseline = serializers.JSONField(read_only=True)
    captured_state = serializers.JSONField(read_only=True)
    verification = serializers.JSONField(
        read_only=True,
        help_text="After a rollback: the verification window (level, since, "
        "until, formerly treated merchants, the last decision's reason).",
    )

    class Meta(RolloutOutputSerializer.Meta):
        fields = [
            *RolloutOutputSerializer.Meta.fields,
            "verification_state",
            "verification",
            "auto_escalate",
            "baseline",
            "captured_state",
            "phases",
            "checks",
            "latest_check_runs",
            "last_decision",
            "gate",
        ]

    def get_latest_check_runs(self, rollout: Rollout) -> list[dict]:
        runs = (
            CheckRun.objects.filter(rollout=rollout)
            .select_related("health_check")
            .order_by("-measured_at", "-id")[:20]
        )
        return CheckRunOutputSerializer(runs, many=True).data

    def get_gate(self, rollout: Rollout) -> dict | None:
        from canary.services import rollout_gate
        from canary.transitions import ACTIVE

        if rollout.status not in ACTIVE or not rollout.phases.exists():
            return None
        decision = rollout_gate(rollout=rollout)
        return {
            "action": decision.action,
            "reasons": list(decision.reasons),
            "remaining_seconds": decision.remaining,
        }

    def get_last_decision(self, rollout: Rollout) -> dict | None:
        from controlplane.audit.models import AuditEvent

        event = (
            AuditEvent.objects.filter(
                target_type="canary.rollout", target_id=str(rollout.pk)
            )
            .exclude(action="rollout.created")
            .order_by("-id")
            .first()
        )
        if event is None:
            return None
        return {
            "action": event.action,
            "at": event.created_at,
            "actor": f"{event.actor_type}:{event.actor_name}",
            "details": event.details,
        }


class BaselineInputSerializer(serializers.Serializer):
    baseline = serializers.DictField(
        help_text="Check name -> the value measured before start (relative mode)."
    )


# -- check templates ----------------------------------------------------------


class CheckTemplateCreateInputSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=100)
    description = serializers.CharField(
        max_length=500, required=False, allow_blank=True, default=""
    )
    checks = serializers.JSONField(help_text="The check definitions (a list).")


class CheckTemplateVersionInputSerializer(serializers.Serializer):
    description = serializers.CharField(
        max_length=500,
        required=False,
        allow_blank=True,
        help_text="Default: the latest version's.",
    )
    checks = serializers.JSONField(help_text="The check definitions (a list).")


class CheckTemplateArchiveInputSerializer(serializers.Serializer):
    version = serializers.IntegerField(
        min_value=1, required=False, help_text="Default: every version."
    )


class CheckTemplateOutputSerializer(serializers.ModelSerializer):
    reference = serializers.CharField(help_text="NAME@VERSION, as rollouts record it.")
    is_builtin = serializers.SerializerMethodField()
    checks = serializers.JSONField()

    class Meta:
        model = CheckTemplate
        fields = [
            "name",
            "version",
            "reference",
            "description",
            "checks",
            "archived",
            "is_builtin",
            "created_by",
            "created_at",
        ]

    def get_is_builtin(self, template: CheckTemplate) -> bool:
        return template.pk is None
