"""Read API of the audit log: list with filters, and chain verification.

Read-only: nothing here writes. Needs ``audit.view_auditevent``. Routes are
wired in ``flags.api.urls`` (``/api/v1/audit-events``).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import BasePermission
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.pagination import Pagination
from controlplane.audit.models import AuditEvent
from controlplane.audit.services import audit_chain_verify, audit_event_as_dict


class CanViewAuditLog(BasePermission):
    message = "You need the 'audit.view_auditevent' permission to read the audit log."

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(
            user and user.is_authenticated and user.has_perm("audit.view_auditevent")
        )


class AuditEventFilterSerializer(serializers.Serializer):
    target_type = serializers.CharField(
        required=False, max_length=64, help_text="e.g. flags.flagstate, flags.merchant"
    )
    target_id = serializers.CharField(required=False, max_length=128)
    actor = serializers.CharField(
        required=False, max_length=150, help_text="Actor name."
    )
    actor_type = serializers.ChoiceField(
        required=False, choices=["user", "api_key", "system", "controller"]
    )
    action = serializers.CharField(
        required=False,
        max_length=64,
        help_text="Exact action, or a prefix ending in '.' (flag_state.)",
    )
    environment = serializers.CharField(required=False, max_length=64)
    since = serializers.DateTimeField(required=False, help_text="ISO 8601, inclusive.")
    until = serializers.DateTimeField(required=False, help_text="ISO 8601, exclusive.")


def audit_event_list(
    *,
    target_type: str | None = None,
    target_id: str | None = None,
    actor: str | None = None,
    actor_type: str | None = None,
    action: str | None = None,
    environment: str | None = None,
    since: Any = None,
    until: Any = None,
) -> QuerySet[AuditEvent]:
    """Return audit events matching every given filter, newest first."""
    events = AuditEvent.objects.order_by("-id")
    exact = {
        "target_type": target_type,
        "target_id": target_id,
        "actor_name": actor,
        "actor_type": actor_type,
        "environment": environment,
    }
    events = events.filter(**{name: value for name, value in exact.items() if value})
    if action:
        events = (
            events.filter(action__startswith=action)
            if action.endswith(".")
            else events.filter(action=action)
        )
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    return events


_ACTOR = inline_serializer(
    "AuditActor",
    {
        "type": serializers.CharField(),
        "id": serializers.CharField(),
        "name": serializers.CharField(),
    },
)
_TARGET = inline_serializer(
    "AuditTarget",
    {
        "type": serializers.CharField(),
        "id": serializers.CharField(),
        "repr": serializers.CharField(),
    },
)


class AuditEventOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    created_at = serializers.CharField(help_text="UTC, ISO 8601 with microseconds.")
    actor = _ACTOR
    action = serializers.CharField()
    target = _TARGET
    environment = serializers.CharField()
    before = serializers.JSONField(allow_null=True)
    after = serializers.JSONField(allow_null=True)
    details = serializers.JSONField()
    request_id = serializers.CharField()
    prev_hash = serializers.CharField()
    hash = serializers.CharField()


class AuditChainReportSerializer(serializers.Serializer):
    ok = serializers.BooleanField()
    checked = serializers.IntegerField(
        help_text="Events verified before the first break."
    )
    broken_id = serializers.IntegerField(allow_null=True)
    problem = serializers.CharField(allow_blank=True)


_ERROR = inline_serializer(
    "AuditError",
    {
        "code": serializers.CharField(),
        "message": serializers.CharField(),
        "errors": serializers.DictField(
            child=serializers.ListField(child=serializers.CharField())
        ),
    },
)


class AuditEventListApi(APIView):
    permission_classes = [CanViewAuditLog]

    @extend_schema(
        operation_id="audit_events_list",
        tags=["audit"],
        parameters=[AuditEventFilterSerializer],
        responses={
            200: AuditEventOutputSerializer(many=True),
            400: OpenApiResponse(_ERROR),
            401: OpenApiResponse(_ERROR),
            403: OpenApiResponse(_ERROR),
        },
    )
    def get(self, request: Request) -> Response:
        filters = AuditEventFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        paginator = Pagination()
        page = paginator.paginate_queryset(
            audit_event_list(**filters.validated_data), request, view=self
        )
        return paginator.get_paginated_response(
            [audit_event_as_dict(event) for event in page]
        )


class AuditChainVerifyApi(APIView):
    permission_classes = [CanViewAuditLog]

    @extend_schema(
        operation_id="audit_events_verify",
        tags=["audit"],
        responses={
            200: AuditChainReportSerializer,
            401: OpenApiResponse(_ERROR),
            403: OpenApiResponse(_ERROR),
        },
        description="Walk the whole hash chain; report the first event that breaks it.",
    )
    def get(self, request: Request) -> Response:
        report = audit_chain_verify()
        return Response(
            {
                "ok": report.ok,
                "checked": report.checked,
                "broken_id": report.broken_id,
                "problem": report.problem,
            }
        )
