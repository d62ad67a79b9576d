"""Management API of the rollback engine: thin views over services/selectors.

Errors are mapped in one place (controlplane.api.exception_handler); backends are
never readable or writable here.
"""

from __future__ import annotations

from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.permissions import HasModelPermission, request_actor
from flags.api.serializers import ErrorSerializer
from rollback import selectors, services
from rollback.api.serializers import (
    DeploymentInSerializer,
    DeploymentOutSerializer,
    RollbackRunInSerializer,
    RollbackRunOutSerializer,
)
from rollback.models import Deployment, RollbackRun
from rollback.preflight import rollback_preflight

_ERRORS = {
    code: OpenApiResponse(ErrorSerializer, description=text)
    for code, text in (
        (400, "Invalid input (field-level messages in `errors`)"),
        (401, "Not authenticated"),
        (403, "Missing permission"),
        (404, "Unknown deployment or run"),
        (409, "Conflict (no previous deployment, run in progress, not failed, ...)"),
    )
}


def _responses(ok: int, body, *errors: int) -> dict:
    return {ok: body, **{code: _ERRORS[code] for code in errors}}


_DEPLOYMENT_PAGE = inline_serializer(
    "DeploymentPage", {"results": DeploymentOutSerializer(many=True)}
)
_PREFLIGHT = inline_serializer(
    "RollbackPreflight",
    {"deployment": serializers.IntegerField(), "levels": serializers.DictField()},
)


class DeploymentListCreateApi(APIView):
    """GET: deployments, newest first. POST: record one (what CI calls)."""

    permission_classes = [HasModelPermission]
    permission_model = Deployment

    @extend_schema(
        operation_id="deployments_list",
        tags=["deployments"],
        parameters=[
            OpenApiParameter("service", str),
            OpenApiParameter("environment", str),
            OpenApiParameter("limit", int),
        ],
        responses=_responses(200, _DEPLOYMENT_PAGE, 401, 403),
    )
    def get(self, request: Request) -> Response:
        rows = selectors.deployment_list(
            service=request.query_params.get("service"),
            environment=request.query_params.get("environment"),
        )
        raw = str(request.query_params.get("limit", "100"))
        limit = min(int(raw), 500) if raw.isdigit() else 100
        return Response(
            {"results": DeploymentOutSerializer(rows[:limit], many=True).data}
        )

    @extend_schema(
        operation_id="deployments_create",
        tags=["deployments"],
        request=DeploymentInSerializer,
        responses=_responses(201, DeploymentOutSerializer, 400, 401, 403, 404),
    )
    def post(self, request: Request) -> Response:
        data = DeploymentInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        deployment = services.deployment_record(
            actor=request_actor(request), **data.validated_data
        )
        return Response(
            DeploymentOutSerializer(deployment).data, status=status.HTTP_201_CREATED
        )


class DeploymentDetailApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model = Deployment

    @extend_schema(
        operation_id="deployments_retrieve",
        tags=["deployments"],
        responses=_responses(200, DeploymentOutSerializer, 401, 403, 404),
    )
    def get(self, request: Request, deployment_id: int) -> Response:
        return Response(
            DeploymentOutSerializer(selectors.deployment_get(deployment_id)).data
        )


class DeploymentPreflightApi(APIView):
    """Which rollback levels are possible for this deployment (optionally ?flag=KEY)."""

    permission_classes = [HasModelPermission]
    permission_model = Deployment

    @extend_schema(
        operation_id="deployments_preflight",
        tags=["deployments"],
        parameters=[OpenApiParameter("flag", str), OpenApiParameter("backend", str)],
        responses=_responses(200, _PREFLIGHT, 400, 401, 403, 404),
    )
    def get(self, request: Request, deployment_id: int) -> Response:
        deployment = selectors.deployment_get(deployment_id)
        report = rollback_preflight(
            deployment=deployment,
            flag=request.query_params.get("flag"),
            backend=request.query_params.get("backend"),
        )
        return Response(
            {
                "deployment": deployment.pk,
                "levels": {str(k): v for k, v in report.items()},
            }
        )


class RollbackRunCreateApi(APIView):
    """POST: start a rollback run (levels 1..level), executed by a worker."""

    permission_classes = [HasModelPermission]
    permission_model = RollbackRun

    @extend_schema(
        operation_id="rollback_runs_create",
        tags=["rollback runs"],
        request=RollbackRunInSerializer,
        responses=_responses(201, RollbackRunOutSerializer, 400, 401, 403, 404, 409),
    )
    def post(self, request: Request) -> Response:
        data = RollbackRunInSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        run = services.rollback_run_start(
            actor=request_actor(request), **data.validated_data
        )
        run = selectors.rollback_run_get(run.pk)
        return Response(
            RollbackRunOutSerializer(run).data, status=status.HTTP_201_CREATED
        )


class RollbackRunDetailApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model = RollbackRun

    @extend_schema(
        operation_id="rollback_runs_retrieve",
        tags=["rollback runs"],
        responses=_responses(200, RollbackRunOutSerializer, 401, 403, 404),
    )
    def get(self, request: Request, run_id: int) -> Response:
        return Response(
            RollbackRunOutSerializer(selectors.rollback_run_get(run_id)).data
        )


class RollbackRunRetryApi(APIView):
    """POST: retry a failed run from its failed step (409 unless failed)."""

    permission_classes = [HasModelPermission]
    permission_model = RollbackRun
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="rollback_runs_retry",
        tags=["rollback runs"],
        request=None,
        responses=_responses(202, RollbackRunOutSerializer, 401, 403, 404, 409),
    )
    def post(self, request: Request, run_id: int) -> Response:
        run = services.rollback_run_retry(actor=request_actor(request), run_id=run_id)
        return Response(
            RollbackRunOutSerializer(selectors.rollback_run_get(run.pk)).data,
            status=status.HTTP_202_ACCEPTED,
        )
