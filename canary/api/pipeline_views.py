"""Pipeline API: thin views over ``canary.services.pipelines``.

``GET/POST /api/v1/pipelines``, ``GET /api/v1/pipelines/<id>`` (the stages
side by side with their evidence), and one view per command: start,
approve, abort. Errors come from the services as ``DomainError`` (400 with
the field, 404, 409 for a refused move or the four-eyes rule).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api import pipeline_serializers as s
from canary.api.serializers import ReasonInputSerializer
from canary.models import Pipeline, PipelineStatus
from canary.services import pipelines as services
from controlplane.api.pagination import Pagination
from controlplane.api.permissions import HasModelPermission, request_actor
from flags.changes.api.views import pending_response
from flags.changes.gate import Submission

TAGS = ["pipelines"]


class PipelineApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = Pipeline


def _detail(pipeline: Pipeline) -> dict:
    return s.PipelineDetailOutputSerializer(services.pipeline_get(pipeline.pk)).data


def _reason(request: Request) -> str:
    checked = ReasonInputSerializer(data=request.data)
    checked.is_valid(raise_exception=True)
    return checked.validated_data["reason"]


class PipelineListCreateApi(PipelineApi):
    @extend_schema(
        operation_id="pipelines_list",
        tags=TAGS,
        parameters=[OpenApiParameter("status", str, enum=PipelineStatus.values)],
        responses={200: s.PipelineOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        pipelines = services.pipeline_list(status=request.query_params.get("status"))
        paginator = Pagination()
        page = paginator.paginate_queryset(pipelines, request, view=self)
        return paginator.get_paginated_response(
            s.PipelineOutputSerializer(page, many=True).data
        )

    @extend_schema(
        operation_id="pipelines_create",
        tags=TAGS,
        request=s.PipelineCreateInputSerializer,
        responses={201: s.PipelineDetailOutputSerializer},
        description="Create a draft pipeline: each stage's draft rollout (`flag`) "
        "or release (`flags`) in its environment, from its plan.",
    )
    def post(self, request: Request) -> Response:
        checked = s.PipelineCreateInputSerializer(data=request.data)
        checked.is_valid(raise_exception=True)
        data: dict[str, Any] = dict(checked.validated_data)
        data["stages"] = [dict(stage) for stage in data["stages"]]
        pipeline = services.pipeline_create(actor=request_actor(request), **data)
        return Response(_detail(pipeline), status=status.HTTP_201_CREATED)


class PipelineDetailApi(PipelineApi):
    @extend_schema(
        operation_id="pipelines_retrieve",
        tags=TAGS,
        responses={200: s.PipelineDetailOutputSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(services.pipeline_get(pk)))


class PipelineCommandApi(PipelineApi):
    """Base of the command endpoints: POST, ``change`` permission."""

    permission_actions = {"POST": ("change",)}

    def post(self, request: Request, pk: int) -> Response:
        pipeline = services.pipeline_get(pk)
        pipeline = self.run(
            pipeline_id=pipeline.pk,
            actor=request_actor(request),
            reason=_reason(request),
        )
        return Response(_detail(pipeline))

    def run(self, **kwargs: Any) -> Pipeline:
        raise NotImplementedError


def _command(name: str, description: str) -> Any:
    return extend_schema(
        operation_id=f"pipelines_{name}",
        tags=TAGS,
        request=ReasonInputSerializer,
        responses={200: s.PipelineDetailOutputSerializer},
        description=description,
    )


class PipelineStartApi(PipelineCommandApi):
    @_command(
        "start",
        "Run the first stage's preflight and start it; 409 with the preflight "
        "report when refused (the pipeline stays a draft); 202 with a change "
        "request when the stage's environment asks approvals of rollout starts.",
    )
    def post(self, request: Request, pk: int) -> Response:
        response = super().post(request, pk)
        change = services.pipeline_pending_change(services.pipeline_get(pk))
        if change is not None:  # the stage's environment asks approvals
            return pending_response(Submission(change_request=change))
        return response

    def run(self, **kwargs: Any) -> Pipeline:
        return services.pipeline_start(**kwargs)


class PipelineApproveApi(PipelineCommandApi):
    @_command(
        "approve",
        "Approve starting the next stage; 409 unless awaiting approval, or when "
        "the approver created the pipeline.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Pipeline:
        return services.pipeline_approve(**kwargs)


class PipelineAbortApi(PipelineCommandApi):
    @_command(
        "abort",
        "Abort: the running stage and every draft stage are aborted (each flag "
        "back as captured at start).",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Pipeline:
        return services.pipeline_abort(**kwargs)
