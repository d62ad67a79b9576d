"""Release API: thin views over ``canary.services.releases``.

A release moves several flags through one plan together; its member
rollouts keep their own endpoints (``/api/v1/rollouts/<id>``). One view
per command (start, pause, resume, approve, abort). Errors come from the
services as ``DomainError`` and are mapped by the shared exception handler
(an invalid move is a 409). Permissions are Django model permissions on
``canary.Release``: reading needs ``view_release``, creating
``add_release``, every command ``change_release``. A start goes through
the four-eyes gate (``release.start``, counted as a rollout start).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary.api import release_serializers as s
from canary.api.views import _input, _require_sql_permission
from canary.models import Release, ReleaseStatus
from canary.release_selectors import (
    release_estimates_now,
    release_list,
    release_member_rows,
    release_with_counts,
)
from canary.services import check_template_resolve
from canary.services import releases as release_services
from controlplane.api.pagination import Pagination
from controlplane.api.permissions import HasModelPermission, request_actor
from controlplane.exceptions import InvalidInput, NotFound
from flags.changes import gate
from flags.changes.api.views import pending_response
from flags.selectors import environment_get

TAGS = ["releases"]


def release_detail_data(release: Release) -> dict:
    """Return the detail body: the release, its members and estimates."""
    release = release_with_counts(release)
    release.member_rows = release_member_rows(release)
    release.estimates_now = release_estimates_now(release)
    return s.ReleaseDetailOutputSerializer(release).data


class ReleaseApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = Release


def _command(name: str, serializer: type, description: str) -> Any:
    return extend_schema(
        operation_id=f"releases_{name}",
        tags=TAGS,
        request=serializer,
        responses={200: s.ReleaseDetailOutputSerializer},
        description=description,
    )


class ReleaseListCreateApi(ReleaseApi):
    @extend_schema(
        operation_id="releases_list",
        tags=TAGS,
        parameters=[
            OpenApiParameter("status", str, enum=ReleaseStatus.values),
            OpenApiParameter("environment", str),
        ],
        responses={200: s.ReleaseOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        releases = release_list(
            status=request.query_params.get("status"),
            environment=request.query_params.get("environment"),
        )
        paginator = Pagination()
        page = paginator.paginate_queryset(releases, request, view=self)
        return paginator.get_paginated_response(
            s.ReleaseOutputSerializer(page, many=True).data
        )

    @extend_schema(
        operation_id="releases_create",
        tags=TAGS,
        request=s.ReleaseCreateInputSerializer,
        responses={201: s.ReleaseDetailOutputSerializer},
        description="Create a draft release: one draft member rollout per flag, "
        "every member with the same plan (`template`, `pilot_merchants`, "
        "`duration_scale`) or `phases`, and the same checks (`check_template`, "
        "`checks`; neither: the default check set). At least two flags.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.ReleaseCreateInputSerializer, request)
        template_checks = (
            check_template_resolve(data["check_template"]).checks
            if data.get("check_template")
            else []
        )
        _require_sql_permission(request, data.get("checks"), template_checks)
        data["environment"] = environment_get(data["environment"])
        try:
            release = release_services.release_create(
                actor=request_actor(request), **data
            )
        except NotFound as exc:
            # A flag named in the body that does not exist is bad input.
            if exc.field and exc.field.startswith("flags"):
                raise InvalidInput(exc.message, field=exc.field) from None
            raise
        return Response(release_detail_data(release), status=status.HTTP_201_CREATED)


class ReleaseDetailApi(ReleaseApi):
    @extend_schema(
        operation_id="releases_retrieve",
        tags=TAGS,
        responses={200: s.ReleaseDetailOutputSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(release_detail_data(release_services.release_get(pk)))


class ReleaseCommandApi(ReleaseApi):
    """Base of the command endpoints: POST, ``change`` permission."""

    permission_actions = {"POST": ("change",)}
    input_serializer: type = s.ReasonInputSerializer
    default_reason = ""

    def post(self, request: Request, pk: int) -> Response:
        release = release_services.release_get(pk)
        data = _input(self.input_serializer, request)
        release = self.run(
            release_id=release.pk,
            actor=request_actor(request),
            reason=data["reason"] or self.default_reason,
        )
        return Response(release_detail_data(release))

    def run(self, **kwargs: Any) -> Release:
        raise NotImplementedError


class ReleaseStartApi(ReleaseCommandApi):
    @_command(
        "start",
        s.ReasonInputSerializer,
        "Run every member's preflight, then start them all together; 409 with "
        "the preflight report (naming the flag) when refused, 409 when the "
        "release is not a draft; 202 with a change request when the "
        "environment's approval policy asks for approvals of rollout starts.",
    )
    def post(self, request: Request, pk: int) -> Response:
        release = release_services.release_get(pk)
        data = _input(s.ReasonInputSerializer, request)
        actor = request_actor(request)
        outcome = gate.submit(  # four-eyes may turn it into a change request
            actor=actor,
            operation="release.start",
            arguments={"release": release.pk, "reason": data["reason"]},
            apply=lambda: release_services.release_start(
                release_id=release.pk, actor=actor, reason=data["reason"]
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        return Response(release_detail_data(outcome.result))


class ReleasePauseApi(ReleaseCommandApi):
    default_reason = "paused by an operator"

    @_command("pause", s.ReasonInputSerializer, "Pause every running member.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Release:
        return release_services.release_pause(**kwargs)


class ReleaseResumeApi(ReleaseCommandApi):
    @_command("resume", s.ReasonInputSerializer, "Resume every paused member.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Release:
        return release_services.release_resume(**kwargs)


class ReleaseApproveApi(ReleaseCommandApi):
    @_command(
        "approve",
        s.ReasonInputSerializer,
        "Approve leaving the current phase, for every active member.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Release:
        return release_services.release_approve(**kwargs)


class ReleaseAbortApi(ReleaseCommandApi):
    input_serializer = s.RequiredReasonInputSerializer

    @_command(
        "abort",
        s.RequiredReasonInputSerializer,
        "Abort every member not finished: each flag goes back as captured at "
        "start. The reason is required.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Release:
        return release_services.release_abort(**kwargs)
