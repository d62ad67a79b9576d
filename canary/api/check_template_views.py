"""Check template API: thin views over ``canary.services.check_templates``.

Permissions are the CheckTemplate model permissions (reading ``view``,
creating ``add``, a new version or an archive ``change``); a template with
a sql check also needs ``canary.manage_sql_checks``, as a rollout's checks
do. Errors are ``DomainError``s mapped by the project's exception handler.
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary import services
from canary.api import serializers as s
from canary.api.views import _input, _require_sql_permission
from canary.models import CheckTemplate
from controlplane.api.pagination import Pagination
from controlplane.api.permissions import HasModelPermission, request_actor
from controlplane.exceptions import InvalidInput

TAGS = ["check templates"]


def _flag(request: Request, name: str) -> bool:
    raw = request.query_params.get(name, "false").lower()
    if raw not in ("true", "false", "1", "0"):
        raise InvalidInput(f"{name}: must be true or false", field=name)
    return raw in ("true", "1")


class CheckTemplateApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = CheckTemplate


class CheckTemplateListCreateApi(CheckTemplateApi):
    @extend_schema(
        operation_id="check_templates_list",
        tags=TAGS,
        parameters=[
            OpenApiParameter(
                "archived", bool, description="Include fully archived templates."
            )
        ],
        responses={200: s.CheckTemplateOutputSerializer(many=True)},
        description="The latest version of each template (the built-in `default` "
        "while none is stored).",
    )
    def get(self, request: Request) -> Response:
        templates = services.check_template_list(
            include_archived=_flag(request, "archived")
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(templates, request, view=self)
        return paginator.get_paginated_response(
            s.CheckTemplateOutputSerializer(page, many=True).data
        )

    @extend_schema(
        operation_id="check_templates_create",
        tags=TAGS,
        request=s.CheckTemplateCreateInputSerializer,
        responses={201: s.CheckTemplateOutputSerializer},
        description="Create version 1 of a template; 409 if the name exists.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.CheckTemplateCreateInputSerializer, request)
        _require_sql_permission(request, data["checks"])
        template = services.check_template_create(actor=request_actor(request), **data)
        return Response(
            s.CheckTemplateOutputSerializer(template).data,
            status=status.HTTP_201_CREATED,
        )


class CheckTemplateDetailApi(CheckTemplateApi):
    @extend_schema(
        operation_id="check_templates_retrieve",
        tags=TAGS,
        responses={200: s.CheckTemplateOutputSerializer},
        description="The latest non-archived version.",
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(
            s.CheckTemplateOutputSerializer(services.check_template_get(name)).data
        )


class CheckTemplateVersionsApi(CheckTemplateApi):
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="check_templates_versions_list",
        tags=TAGS,
        responses={200: s.CheckTemplateOutputSerializer(many=True)},
        description="Every version, newest first.",
    )
    def get(self, request: Request, name: str) -> Response:
        return Response(
            s.CheckTemplateOutputSerializer(
                services.check_template_versions(name), many=True
            ).data
        )

    @extend_schema(
        operation_id="check_templates_versions_create",
        tags=TAGS,
        request=s.CheckTemplateVersionInputSerializer,
        responses={
            201: s.CheckTemplateOutputSerializer,
            200: s.CheckTemplateOutputSerializer,
        },
        description="Write the next version (versions are immutable); 200 with "
        "the latest version when nothing differs.",
    )
    def post(self, request: Request, name: str) -> Response:
        data = _input(s.CheckTemplateVersionInputSerializer, request)
        _require_sql_permission(request, data["checks"])
        before = services.check_template_versions(name)[0]
        template = services.check_template_update(
            actor=request_actor(request), name=name, **data
        )
        created = before.pk != template.pk
        return Response(
            s.CheckTemplateOutputSerializer(template).data,
            status=status.HTTP_201_CREATED if created else status.HTTP_200_OK,
        )


class CheckTemplateVersionDetailApi(CheckTemplateApi):
    @extend_schema(
        operation_id="check_templates_versions_retrieve",
        tags=TAGS,
        responses={200: s.CheckTemplateOutputSerializer},
        description="One version, archived or not (`default` 0 is the built-in).",
    )
    def get(self, request: Request, name: str, version: int) -> Response:
        return Response(
            s.CheckTemplateOutputSerializer(
                services.check_template_get(name, version)
            ).data
        )


class CheckTemplateArchiveApi(CheckTemplateApi):
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="check_templates_archive",
        tags=TAGS,
        request=s.CheckTemplateArchiveInputSerializer,
        responses={200: s.CheckTemplateOutputSerializer(many=True)},
        description="Archive one version, or every version; returns the versions "
        "archived now. Rollouts that use them keep their checks.",
    )
    def post(self, request: Request, name: str) -> Response:
        data = _input(s.CheckTemplateArchiveInputSerializer, request)
        archived = services.check_template_archive(
            actor=request_actor(request), name=name, version=data.get("version")
        )
        return Response(s.CheckTemplateOutputSerializer(archived, many=True).data)
