"""POST /api/v1/events: apps report outcome events with a server key."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.services.outcomes import outcome_events_ingest
from controlplane.api.errors import RequestRefused, read_json
from controlplane.apikeys.authentication import HasServerKey, ServerKeyAuthentication
from controlplane.conf import setting
from controlplane.exceptions import InvalidInput
from flags.api.serializers import ErrorSerializer

_EVENT = inline_serializer(
    "OutcomeEvent",
    {
        # ``flag`` + ``variation``, or ``flags``, or both (consistent)
        "flag": serializers.CharField(required=False),
        "merchant": serializers.CharField(),
        "variation": serializers.CharField(required=False),
        # every flag served to the request: flag key -> variation (at most
        # 20), stored as one row per flag
        "flags": serializers.DictField(child=serializers.CharField(), required=False),
        "outcome": serializers.ChoiceField(choices=["success", "failure"]),
        "duration_ms": serializers.FloatField(required=False, allow_null=True),
        "occurred_at": serializers.DateTimeField(required=False),
        "name": serializers.CharField(required=False),
        # stored once per environment and flag: a batch sent again is not
        # counted twice
        "id": serializers.CharField(required=False, max_length=64),
    },
)


class OutcomeEventsIngestApi(APIView):
    """Store a batch ``{"events": [...]}`` for the key's environment.

    All or nothing: 202 with ``{"accepted": n}``, or 400 with field errors
    keyed ``events[i].field`` and nothing stored. 401 without a valid key,
    403 for a management key, 413 for a body over the setting
    ``OUTCOME_EVENTS_MAX_BODY_BYTES`` (refused before it is read), 411 for a
    chunked body the server cannot read.
    """

    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]
    parser_classes = [JSONParser]

    @extend_schema(
        operation_id="events_ingest",
        tags=["outcome events"],
        request=inline_serializer(
            "OutcomeEventBatch", {"events": serializers.ListField(child=_EVENT)}
        ),
        responses={
            202: inline_serializer(
                "OutcomeEventsAccepted", {"accepted": serializers.IntegerField()}
            ),
            400: OpenApiResponse(
                ErrorSerializer, description="Invalid events (nothing stored)"
            ),
            411: OpenApiResponse(
                ErrorSerializer,
                description="A chunked body this server cannot read",
            ),
            413: OpenApiResponse(
                ErrorSerializer,
                description="Body over OUTCOME_EVENTS_MAX_BODY_BYTES (not read)",
            ),
            401: OpenApiResponse(
                ErrorSerializer, description="Missing or wrong server key"
            ),
            403: OpenApiResponse(ErrorSerializer, description="Not a server key"),
        },
    )
    def post(self, request: Request) -> Response:
        try:
            # The project's reader, not DRF's parser: it refuses an oversized
            # body before reading it, reads chunked bodies, and refuses JSON
            # too deep, not finite or not valid Unicode, naming the field.
            body, _raw = read_json(
                request._request, setting("OUTCOME_EVENTS_MAX_BODY_BYTES")
            )
        except RequestRefused as exc:
            # this API's codes are the management API's: lower case
            code = "invalid" if exc.code == "INVALID_REQUEST" else exc.code.lower()
            errors = {exc.field: [exc.message]} if exc.field else {}
            return Response(
                {"code": code, "message": exc.message, "errors": errors},
                status=exc.status,
            )
        if not isinstance(body, dict) or "events" not in body:
            raise InvalidInput('send an object {"events": [...]}', field="events")
        count = outcome_events_ingest(api_key_info=request.auth, events=body["events"])
        return Response({"accepted": count}, status=status.HTTP_202_ACCEPTED)
