"""Input and output serializers of the change-management API (shape only)."""

from __future__ import annotations

from rest_framework import serializers

from flags.changes.models import (
    ApprovalPolicy,
    ChangeRequest,
    ChangeRequestStatus,
    Review,
    ScheduledChange,
    ScheduledChangeStatus,
)
from flags.changes.operations import OPERATIONS

_MAX_VERSION = 2**31 - 1


class ChangeInputSerializer(serializers.Serializer):
    operation = serializers.CharField(
        max_length=64,
        help_text=f"One of: {', '.join(sorted(OPERATIONS))}.",
    )
    arguments = serializers.JSONField(
        help_text='The operation\'s arguments, e.g. {"flag": "checkout_theme", '
        '"environment": "production", "percentage": 10}.'
    )
    version = serializers.IntegerField(
        required=False,
        min_value=1,
        max_value=_MAX_VERSION,
        help_text="The flag state version the change is based on (409 when stale).",
    )
    reason = serializers.CharField(max_length=500, required=False, default="")


class ScheduledChangeInputSerializer(ChangeInputSerializer):
    run_at = serializers.DateTimeField(
        help_text="When to apply it (ISO 8601 with a time zone, in the future)."
    )


class ReviewInputSerializer(serializers.Serializer):
    comment = serializers.CharField(
        max_length=1000, required=False, default="", allow_blank=True
    )


class CancelInputSerializer(serializers.Serializer):
    reason = serializers.CharField(
        max_length=500, required=False, default="", allow_blank=True
    )


class ChangeFilterSerializer(serializers.Serializer):
    status = serializers.CharField(max_length=16, required=False)
    environment = serializers.CharField(max_length=64, required=False)


class ReviewOutputSerializer(serializers.ModelSerializer):
    reviewer = serializers.CharField(source="reviewer_name")

    class Meta:
        model = Review
        fields = ["reviewer", "decision", "comment", "created_at"]
        read_only_fields = fields


class _ChangeOutput(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key")
    author = serializers.SerializerMethodField()

    def get_author(self, change: ChangeRequest | ScheduledChange) -> str:
        return f"{change.author_type}:{change.author_name}"


_COMMON = [
    "id",
    "environment",
    "operation",
    "arguments",
    "target",
    "based_on_version",
    "author",
    "reason",
    "result",
    "applied_at",
    "created_at",
    "updated_at",
]


class ChangeRequestOutputSerializer(_ChangeOutput):
    status = serializers.ChoiceField(choices=ChangeRequestStatus.choices)
    reviews = ReviewOutputSerializer(many=True, read_only=True)
    approvals = serializers.SerializerMethodField()

    class Meta:
        model = ChangeRequest
        fields = [*_COMMON, "status", "required_approvals", "approvals", "reviews"]
        read_only_fields = fields

    def get_approvals(self, change: ChangeRequest) -> int:
        return sum(1 for r in change.reviews.all() if r.decision == "approve")


class PendingOutputSerializer(serializers.Serializer):
    """A gated change answered 202: nothing applied, a request created."""

    detail = serializers.CharField()
    change_request = ChangeRequestOutputSerializer()


class ScheduledChangeOutputSerializer(_ChangeOutput):
    status = serializers.ChoiceField(choices=ScheduledChangeStatus.choices)

    class Meta:
        model = ScheduledChange
        fields = [*_COMMON, "run_at", "status"]
        read_only_fields = fields


class ApprovalPolicySerializer(serializers.ModelSerializer):
    environment = serializers.CharField(source="environment.key", read_only=True)

    class Meta:
        model = ApprovalPolicy
        fields = [
            "environment",
            "flag_state_approvals",
            "override_approvals",
            "kill_approvals",
            "rollout_start_approvals",
            "updated_at",
        ]
        read_only_fields = ["environment", "updated_at"]
        extra_kwargs = {
            name: {"min_value": 0, "max_value": 10, "required": False}
            for name in fields[1:5]
        }
