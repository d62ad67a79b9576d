"""POST /api/v1/usage: a relay reports how often it evaluated each flag.

Relays have no database; their usage flush (``flags.hotpath.usage``) sends
``{"counts": {flag key: n}}`` here with their server key, for the key's
environment, so stale-flag detection sees the traffic relays answer.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.apikeys.authentication import HasServerKey, ServerKeyAuthentication
from flags.api.serializers import ErrorSerializer
from flags.services.usage import flag_usage_report


class FlagUsageReportApi(APIView):
    authentication_classes = [ServerKeyAuthentication]
    permission_classes = [HasServerKey]

    @extend_schema(
        operation_id="usage_report",
        tags=["flag usage"],
        request=inline_serializer(
            "FlagUsageReport",
            {"counts": serializers.DictField(child=serializers.IntegerField())},
        ),
        responses={
            202: inline_serializer(
                "FlagUsageAccepted", {"accepted": serializers.IntegerField()}
            ),
            400: OpenApiResponse(ErrorSerializer, description="Invalid counts"),
            401: OpenApiResponse(ErrorSerializer, description="Missing server key"),
            403: OpenApiResponse(ErrorSerializer, description="Not a server key"),
        },
        description="Add evaluation counts for the key's environment, evaluated "
        "now (relays' usage flush). Unknown flags are skipped.",
    )
    def post(self, request: Request) -> Response:
        data = request.data if isinstance(request.data, dict) else None
        accepted = flag_usage_report(
            environment_key=request.auth.environment_key,
            counts=data.get("counts") if data is not None else None,
        )
        return Response({"accepted": accepted}, status=status.HTTP_202_ACCEPTED)
