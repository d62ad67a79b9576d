"""Alert triggers over HTTP: the secret URL monitoring calls, and management.

``POST /api/v1/triggers/{id}/{secret}/`` needs no other credential: the
secret in the path is the credential (404 when wrong, 410 when revoked).
It accepts Alertmanager's webhook payload or a plain POST
(``flags.triggers``). Listing, creating and revoking triggers are management
endpoints (Django model permissions, like every other management view).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.parsers import payload_too_large
from controlplane.api.permissions import request_actor
from flags import selectors, services
from flags.api import serializers as s
from flags.api.views import ManagementApi, _errors, _input, _paginated
from flags.models import AlertTrigger
from flags.services.triggers import RESULTS, trigger_url
from flags.triggers import MAX_BODY_BYTES, parse_call

# -- serializers ----------------------------------------------------------------


class AlertTriggerOutputSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    flag = serializers.CharField(source="flag.key")
    environment = serializers.CharField(source="environment.key")
    can_restore = serializers.BooleanField(
        help_text="A resolved alert (or action restore) restores this "
        "trigger's own kill."
    )
    prefix = serializers.CharField(help_text="First characters of the secret.")
    created_at = serializers.DateTimeField()
    created_by = serializers.CharField()
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_kill_at = serializers.DateTimeField(allow_null=True)


class AlertTriggerCreatedOutputSerializer(AlertTriggerOutputSerializer):
    secret = serializers.CharField(help_text="Shown once, never stored.")
    url = serializers.CharField(help_text="The URL to configure; shown once.")


class AlertTriggerCreateInputSerializer(serializers.Serializer):
    flag = serializers.CharField(max_length=100)
    environment = serializers.CharField(max_length=64)
    name = serializers.CharField(max_length=100)
    can_restore = serializers.BooleanField(required=False, default=False)


class AlertTriggerFilterSerializer(serializers.Serializer):
    flag = serializers.CharField(max_length=100, required=False)
    environment = serializers.CharField(max_length=64, required=False)
    include_revoked = serializers.BooleanField(required=False, default=False)


class AlertTriggerCallOutputSerializer(serializers.Serializer):
    trigger = serializers.IntegerField(source="trigger.pk")
    flag = serializers.CharField(source="trigger.flag.key")
    environment = serializers.CharField(source="trigger.environment.key")
    action = serializers.ChoiceField(choices=["kill", "restore"])
    result = serializers.ChoiceField(
        choices=list(RESULTS),
        help_text="killed / restored: changed now; already_killed, not_killed, "
        "ignored: nothing changed.",
    )
    enabled = serializers.BooleanField(source="state.enabled")
    killed = serializers.SerializerMethodField()
    state_version = serializers.IntegerField(source="state.version")

    def get_killed(self, result: Any) -> bool:
        return result.state.killed_at is not None


TRIGGER_ID = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="Trigger id."
)
TRIGGER_SECRET = OpenApiParameter(
    "secret",
    OpenApiTypes.STR,
    OpenApiParameter.PATH,
    description="The trigger's secret (shown once at creation).",
)


# -- the secret URL -------------------------------------------------------------


class AlertTriggerCallApi(APIView):
    """Kill or restore a flag state from a monitoring system."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="triggers_call",
        tags=["alert triggers"],
        auth=[],
        parameters=[TRIGGER_ID, TRIGGER_SECRET],
        request=OpenApiTypes.OBJECT,
        responses={
            200: AlertTriggerCallOutputSerializer,
            400: OpenApiResponse(s.ErrorSerializer, description="Invalid payload"),
            404: OpenApiResponse(s.ErrorSerializer, description="No such trigger"),
            409: OpenApiResponse(s.ErrorSerializer, description="Flag archived"),
            410: OpenApiResponse(s.ErrorSerializer, description="Revoked"),
            413: OpenApiResponse(s.ErrorSerializer, description="Body too large"),
        },
        description="Alertmanager webhook (version 4): `firing` kills the flag "
        "state, `resolved` restores it only when the trigger may restore and the "
        "kill is its own. Plain POST: empty body or "
        '`{"action": "kill"|"restore", "reason"?: "..."}`. Idempotent.',
    )
    def post(self, request: Request, id: str, secret: str) -> Response:
        trigger = services.alert_trigger_authenticate(trigger_id=id, secret=secret)
        try:
            declared = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            declared = 0
        if declared > MAX_BODY_BYTES:
            raise payload_too_large(MAX_BODY_BYTES)
        call = parse_call(request.data if request.data is not None else {})
        result = services.alert_trigger_fire(trigger=trigger, call=call)
        return Response(AlertTriggerCallOutputSerializer(result).data)


# -- management -----------------------------------------------------------------


class AlertTriggerListCreateApi(ManagementApi):
    permission_model = AlertTrigger

    @extend_schema(
        operation_id="triggers_list",
        tags=["alert triggers"],
        parameters=[AlertTriggerFilterSerializer],
        responses={200: AlertTriggerOutputSerializer(many=True), **_errors(400, 404)},
    )
    def get(self, request: Request) -> Response:
        filters = _input(
            AlertTriggerFilterSerializer, request, data=request.query_params
        )
        triggers = services.alert_trigger_list(
            flag=selectors.flag_get(filters["flag"]) if "flag" in filters else None,
            environment=selectors.environment_get(filters["environment"])
            if "environment" in filters
            else None,
            include_revoked=filters["include_revoked"],
        )
        return _paginated(self, request, triggers, AlertTriggerOutputSerializer)

    @extend_schema(
        operation_id="triggers_create",
        tags=["alert triggers"],
        request=AlertTriggerCreateInputSerializer,
        responses={201: AlertTriggerCreatedOutputSerializer, **_errors(400, 404)},
        description="Create a trigger. The secret and its URL are in this answer only.",
    )
    def post(self, request: Request) -> Response:
        data = _input(AlertTriggerCreateInputSerializer, request)
        trigger, raw = services.alert_trigger_create(
            actor=request_actor(request),
            flag=selectors.flag_get(data["flag"]),
            environment=selectors.environment_get(data["environment"]),
            name=data["name"],
            can_restore=data["can_restore"],
        )
        path = trigger_url(trigger, raw)
        body = AlertTriggerOutputSerializer(trigger).data | {
            "secret": raw,
            "url": request.build_absolute_uri(path),
        }
        return Response(body, status=status.HTTP_201_CREATED)


class AlertTriggerDetailApi(ManagementApi):
    permission_model = AlertTrigger

    @extend_schema(
        operation_id="triggers_retrieve",
        tags=["alert triggers"],
        parameters=[TRIGGER_ID],
        responses={200: AlertTriggerOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, id: str) -> Response:
        trigger = services.alert_trigger_get(id)
        return Response(AlertTriggerOutputSerializer(trigger).data)


class AlertTriggerRevokeApi(ManagementApi):
    permission_model = AlertTrigger
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="triggers_revoke",
        tags=["alert triggers"],
        parameters=[TRIGGER_ID],
        request=None,
        responses={200: AlertTriggerOutputSerializer, **_errors(404, 409)},
        description="Revoke a trigger: its URL answers 410 from now on.",
    )
    def post(self, request: Request, id: str) -> Response:
        trigger = services.alert_trigger_revoke(
            actor=request_actor(request), trigger=services.alert_trigger_get(id)
        )
        return Response(AlertTriggerOutputSerializer(trigger).data)
