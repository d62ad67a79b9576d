"""Management REST API: thin views over ``flags.services`` and selectors.

Each handler validates input with an input serializer, calls one service or
selector, and answers with an output serializer. Errors are mapped to HTTP
in ``controlplane.api.exception_handler``; permissions live in
``controlplane.api.permissions``.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
)
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.pagination import Pagination
from controlplane.api.permissions import (
    HasModelPermission,
    request_actor,
)
from flags import selectors, services
from flags.api import serializers as s
from flags.changes.api.serializers import PendingOutputSerializer
from flags.models import (
    Environment,
    Flag,
    Merchant,
    Segment,
)

# -- shared -------------------------------------------------------------------


class ServerKeySchema(OpenApiAuthenticationExtension):
    """Describe server API keys (evaluate and report only) in the schema."""

    target_class = "controlplane.apikeys.authentication.ServerKeyAuthentication"
    name = "serverKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A server API key of one environment.",
        }


class ManagementKeySchema(OpenApiAuthenticationExtension):
    """Describe management API keys (``Authorization: Bearer <key>``) in the schema."""

    target_class = "controlplane.apikeys.authentication.ManagementKeyAuthentication"
    name = "managementKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A management API key; carries its service user's permissions.",
        }


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    descriptions = {
        400: "Invalid input (field-level messages in `errors`)",
        401: "Not authenticated",
        403: "Missing permission",
        404: "Unknown key",
        409: "Conflict (stale version, archived flag, object in use, ...)",
        202: "Sent for approval: the environment requires four-eyes",
    }
    return {
        code: OpenApiResponse(
            {202: PendingOutputSerializer, 409: s.VersionConflictSerializer}.get(
                code, s.ErrorSerializer
            ),
            description=descriptions[code],
        )
        for code in (401, 403, *codes)
    }


def _key_param(name: str, example: str, description: str) -> OpenApiParameter:
    return OpenApiParameter(
        name,
        OpenApiTypes.STR,
        OpenApiParameter.PATH,
        description=description,
        examples=[OpenApiExample(example, value=example)],
    )


ENV_PARAM = _key_param("env", "production", "Environment key.")
FLAG_PARAM = _key_param("key", "checkout_theme", "Flag key.")
MERCHANT_PARAM = _key_param("merchant", "m-1", "Merchant key.")


class ManagementApi(APIView):
    """Base of every management view: model permissions, JSON errors."""

    permission_classes = [HasModelPermission]
    permission_model: type = Flag


def _paginated(
    view: APIView, request: Request, queryset: QuerySet, serializer: type
) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(serializer(page, many=True).data)


def _input(
    serializer: type, request: Request, *, partial: bool = False, data: Any = None
) -> dict[str, Any]:
    checked = serializer(data=request.data if data is None else data, partial=partial)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


# -- environments -------------------------------------------------------------


class EnvironmentListCreateApi(ManagementApi):
    permission_model = Environment

    @extend_schema(
        operation_id="environments_list",
        tags=["environments"],
        responses={200: s.EnvironmentOutputSerializer(many=True), **_errors()},
    )
    def get(self, request: Request) -> Response:
        environments = Environment.objects.all()
        return Response(s.EnvironmentOutputSerializer(environments, many=True).data)

    @extend_schema(
        operation_id="environments_create",
        tags=["environments"],
        request=s.EnvironmentCreateInputSerializer,
        responses={201: s.EnvironmentOutputSerializer, **_errors(400)},
    )
    def post(self, request: Request) -> Response:
        data = _input(s.EnvironmentCreateInputSerializer, request)
        environment = services.environment_create(actor=request_actor(request), **data)
        return Response(
            s.EnvironmentOutputSerializer(environment).data,
            status=status.HTTP_201_CREATED,
        )


class EnvironmentDetailApi(ManagementApi):
    permission_model = Environment

    @extend_schema(
        operation_id="environments_retrieve",
        tags=["environments"],
        parameters=[ENV_PARAM],
        responses={200: s.EnvironmentOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, env: str) -> Response:
        return Response(
            s.EnvironmentOutputSerializer(selectors.environment_get(env)).data
        )


# -- merchants ----------------------------------------------------------------


class MerchantListCreateApi(ManagementApi):
    permission_model = Merchant

    @extend_schema(
        operation_id="merchants_list",
        tags=["merchants"],
        parameters=[s.MerchantFilterSerializer],
        responses={200: s.MerchantOutputSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        filters = _input(s.MerchantFilterSerializer, request, data=request.query_params)
        merchants = Merchant.objects.all()
        if filters.get("search"):
            term = filters["search"]
            merchants = merchants.filter(
                Q(key__icontains=term) | Q(name__icontains=term)
            )
        if filters.get("is_active") is not None:
            merchants = merchants.filter(is_active=filters["is_active"])
        return _paginated(self, request, merchants, s.MerchantOutputSerializer)

    @extend_schema(
        operation_id="merchants_create",
        tags=["merchants"],
        request=s.MerchantCreateInputSerializer,
        responses={201: s.MerchantOutputSerializer, **_errors(400)},
    )
    def post(self, request: Request) -> Response:
        data = _input(s.MerchantCreateInputSerializer, request)
        merchant = services.merchant_create(actor=request_actor(request), **data)
        return Response(
            s.MerchantOutputSerializer(merchant).data, status=status.HTTP_201_CREATED
        )


class MerchantDetailApi(ManagementApi):
    permission_model = Merchant

    @extend_schema(
        operation_id="merchants_retrieve",
        tags=["merchants"],
        parameters=[MERCHANT_PARAM],
        responses={200: s.MerchantOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, merchant: str) -> Response:
        return Response(
            s.MerchantOutputSerializer(selectors.merchant_get(merchant)).data
        )

    @extend_schema(
        operation_id="merchants_update",
        tags=["merchants"],
        parameters=[MERCHANT_PARAM],
        request=s.MerchantUpdateInputSerializer,
        responses={200: s.MerchantOutputSerializer, **_errors(400, 404)},
    )
    def put(self, request: Request, merchant: str) -> Response:
        return self._update(request, merchant, partial=False)

    @extend_schema(
        operation_id="merchants_partial_update",
        tags=["merchants"],
        parameters=[MERCHANT_PARAM],
        request=s.MerchantUpdateInputSerializer,
        responses={200: s.MerchantOutputSerializer, **_errors(400, 404)},
    )
    def patch(self, request: Request, merchant: str) -> Response:
        return self._update(request, merchant, partial=True)

    def _update(self, request: Request, key: str, *, partial: bool) -> Response:
        merchant = selectors.merchant_get(key)
        data = _input(s.MerchantUpdateInputSerializer, request, partial=partial)
        merchant = services.merchant_update(
            actor=request_actor(request), merchant=merchant, **data
        )
        return Response(s.MerchantOutputSerializer(merchant).data)


class MerchantBulkUpsertApi(ManagementApi):
    permission_model = Merchant
    permission_actions = {"POST": ("add", "change")}

    @extend_schema(
        operation_id="merchants_bulk_upsert",
        tags=["merchants"],
        request=s.MerchantBulkUpsertInputSerializer,
        responses={200: s.MerchantBulkUpsertOutputSerializer, **_errors(400)},
        description="Create or update up to 1000 merchants by key in one transaction "
        "(all or nothing). One audit event per created or changed merchant.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.MerchantBulkUpsertInputSerializer, request)
        result = services.merchant_upsert_many(
            actor=request_actor(request),
            items=[dict(item) for item in data["merchants"]],
        )
        return Response(s.MerchantBulkUpsertOutputSerializer(result).data)


# -- segments -----------------------------------------------------------------


SEGMENT_PARAM = _key_param("key", "gold", "Segment key.")


class SegmentListCreateApi(ManagementApi):
    permission_model = Segment

    @extend_schema(
        operation_id="segments_list",
        tags=["segments"],
        responses={200: s.SegmentOutputSerializer(many=True), **_errors()},
    )
    def get(self, request: Request) -> Response:
        return _paginated(
            self, request, Segment.objects.all(), s.SegmentOutputSerializer
        )

    @extend_schema(
        operation_id="segments_create",
        tags=["segments"],
        request=s.SegmentCreateInputSerializer,
        responses={201: s.SegmentOutputSerializer, **_errors(400)},
    )
    def post(self, request: Request) -> Response:
        data = _input(s.SegmentCreateInputSerializer, request)
        segment = services.segment_create(actor=request_actor(request), **data)
        return Response(
            s.SegmentOutputSerializer(segment).data, status=status.HTTP_201_CREATED
        )


class SegmentDetailApi(ManagementApi):
    permission_model = Segment

    @extend_schema(
        operation_id="segments_retrieve",
        tags=["segments"],
        parameters=[SEGMENT_PARAM],
        responses={200: s.SegmentOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(s.SegmentOutputSerializer(selectors.segment_get(key)).data)

    @extend_schema(
        operation_id="segments_update",
        tags=["segments"],
        parameters=[SEGMENT_PARAM],
        request=s.SegmentUpdateInputSerializer,
        responses={200: s.SegmentOutputSerializer, **_errors(400, 404)},
    )
    def put(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=False)

    @extend_schema(
        operation_id="segments_partial_update",
        tags=["segments"],
        parameters=[SEGMENT_PARAM],
        request=s.SegmentUpdateInputSerializer,
        responses={200: s.SegmentOutputSerializer, **_errors(400, 404)},
    )
    def patch(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=True)

    @extend_schema(
        operation_id="segments_destroy",
        tags=["segments"],
        parameters=[SEGMENT_PARAM],
        responses={204: None, **_errors(404, 409)},
    )
    def delete(self, request: Request, key: str) -> Response:
        services.segment_delete(
            actor=request_actor(request), segment=selectors.segment_get(key)
        )
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, key: str, *, partial: bool) -> Response:
        segment = selectors.segment_get(key)
        data = _input(s.SegmentUpdateInputSerializer, request, partial=partial)
        segment = services.segment_update(
            actor=request_actor(request), segment=segment, **data
        )
        return Response(s.SegmentOutputSerializer(segment).data)


# -- flags --------------------------------------------------------------------


class FlagListCreateApi(ManagementApi):
    permission_model = Flag

    @extend_schema(
        operation_id="flags_list",
        tags=["flags"],
        parameters=[s.FlagFilterSerializer],
        responses={200: s.FlagOutputSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        filters = _input(s.FlagFilterSerializer, request, data=request.query_params)
        flags = selectors.flag_list(include_archived=filters["include_archived"])
        if filters.get("tag"):
            wanted = filters["tag"]
            keys = [
                flag.key for flag in flags.only("key", "tags") if wanted in flag.tags
            ]
            flags = flags.filter(key__in=keys)
        return _paginated(self, request, flags, s.FlagOutputSerializer)

    @extend_schema(
        operation_id="flags_create",
        tags=["flags"],
        request=s.FlagCreateInputSerializer,
        responses={201: s.FlagOutputSerializer, **_errors(400)},
    )
    def post(self, request: Request) -> Response:
        data = _input(s.FlagCreateInputSerializer, request)
        flag = services.flag_create(actor=request_actor(request), **data)
        return Response(
            s.FlagOutputSerializer(selectors.flag_get(flag.key)).data,
            status=status.HTTP_201_CREATED,
        )


class FlagDetailApi(ManagementApi):
    permission_model = Flag

    @extend_schema(
        operation_id="flags_retrieve",
        tags=["flags"],
        parameters=[FLAG_PARAM],
        responses={200: s.FlagOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, key: str) -> Response:
        return Response(s.FlagOutputSerializer(selectors.flag_get(key)).data)

    @extend_schema(
        operation_id="flags_update",
        tags=["flags"],
        parameters=[FLAG_PARAM],
        request=s.FlagUpdateInputSerializer,
        responses={200: s.FlagOutputSerializer, **_errors(400, 404, 409)},
    )
    def put(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=False)

    @extend_schema(
        operation_id="flags_partial_update",
        tags=["flags"],
        parameters=[FLAG_PARAM],
        request=s.FlagUpdateInputSerializer,
        responses={200: s.FlagOutputSerializer, **_errors(400, 404, 409)},
    )
    def patch(self, request: Request, key: str) -> Response:
        return self._update(request, key, partial=True)

    def _update(self, request: Request, key: str, *, partial: bool) -> Response:
        flag = selectors.flag_get(key)
        data = _input(s.FlagUpdateInputSerializer, request, partial=partial)
        flag = services.flag_update(actor=request_actor(request), flag=flag, **data)
        return Response(s.FlagOutputSerializer(selectors.flag_get(flag.key)).data)


class FlagArchiveApi(ManagementApi):
    permission_model = Flag
    permission_actions = {"POST": ("change",)}
    archived = True

    @extend_schema(
        operation_id="flags_archive",
        tags=["flags"],
        parameters=[FLAG_PARAM],
        request=None,
        responses={200: s.FlagOutputSerializer, **_errors(404)},
    )
    def post(self, request: Request, key: str) -> Response:
        flag = services.flag_archive(
            actor=request_actor(request),
            flag=selectors.flag_get(key),
            archived=self.archived,
        )
        return Response(s.FlagOutputSerializer(selectors.flag_get(flag.key)).data)


class FlagUnarchiveApi(FlagArchiveApi):
    archived = False

    @extend_schema(
        operation_id="flags_unarchive",
        tags=["flags"],
        parameters=[FLAG_PARAM],
        request=None,
        responses={200: s.FlagOutputSerializer, **_errors(404)},
    )
    def post(self, request: Request, key: str) -> Response:
        return super().post(request, key)
