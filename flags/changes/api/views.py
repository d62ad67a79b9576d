"""Change-management API: thin views over ``flags.changes.services``.

Creating, approving or rejecting a change also needs the permission of the
change itself (``flags.change_flagstate`` for a percentage, ...): a
reviewer must be someone who could have made it.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from controlplane.api.pagination import Pagination
from controlplane.api.permissions import HasModelPermission, request_actor
from flags.changes import services
from flags.changes.api import serializers as s
from flags.changes.gate import Submission, pending_message
from flags.changes.models import (
    ApprovalPolicy,
    ChangeRequest,
    ScheduledChange,
)
from flags.changes.operations import operation_get
from flags.selectors import environment_get


def _errors(*codes: int) -> dict[int, OpenApiResponse]:
    from flags.api.serializers import ErrorSerializer, VersionConflictSerializer

    return {
        code: OpenApiResponse(
            VersionConflictSerializer if code == 409 else ErrorSerializer
        )
        for code in (401, 403, *codes)
    }


def _input(serializer: type, data: Any) -> dict[str, Any]:
    checked = serializer(data=data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


def _require_operation_permission(request: Request, operation: str) -> None:
    permission = operation_get(operation).permission
    if not request.user.has_perm(permission):
        raise PermissionDenied(f"You need the {permission} permission for {operation}.")


def _filtered(queryset: QuerySet, request: Request) -> QuerySet:
    filters = _input(s.ChangeFilterSerializer, request.query_params)
    if filters.get("status"):
        queryset = queryset.filter(status=filters["status"])
    if filters.get("environment"):
        queryset = queryset.filter(environment__key=filters["environment"])
    return queryset.select_related("environment")


def _paginated(view: APIView, request: Request, queryset: QuerySet, out: type) -> Any:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(out(page, many=True).data)


def pending_response(submission: Submission) -> Response:
    """Answer 202 for a change sent for approval (used by gated endpoints)."""
    change = submission.change_request
    return Response(
        {
            "detail": pending_message(change),
            "change_request": s.ChangeRequestOutputSerializer(change).data,
        },
        status=status.HTTP_202_ACCEPTED,
    )


class ChangeRequestApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = ChangeRequest


class ChangeRequestListCreateApi(ChangeRequestApi):
    @extend_schema(
        operation_id="change_requests_list",
        tags=["change requests"],
        parameters=[s.ChangeFilterSerializer],
        responses={200: s.ChangeRequestOutputSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        queryset = _filtered(ChangeRequest.objects.prefetch_related("reviews"), request)
        return _paginated(self, request, queryset, s.ChangeRequestOutputSerializer)

    @extend_schema(
        operation_id="change_requests_create",
        tags=["change requests"],
        request=s.ChangeInputSerializer,
        responses={201: s.ChangeRequestOutputSerializer, **_errors(400, 409)},
        description="Ask for a change to be applied once others approve it.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.ChangeInputSerializer, request.data)
        _require_operation_permission(request, data["operation"])
        change = services.change_request_create(
            actor=request_actor(request),
            operation=data["operation"],
            arguments=data["arguments"],
            expected_version=data.get("version"),
            reason=data["reason"],
        )
        return Response(
            s.ChangeRequestOutputSerializer(change).data, status=status.HTTP_201_CREATED
        )


class ChangeRequestDetailApi(ChangeRequestApi):
    @extend_schema(
        operation_id="change_requests_retrieve",
        tags=["change requests"],
        responses={200: s.ChangeRequestOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        change = services.change_request_get(pk)
        return Response(s.ChangeRequestOutputSerializer(change).data)


class ChangeRequestCommandApi(ChangeRequestApi):
    permission_actions = {"POST": ("change",)}
    input_serializer: type = s.ReviewInputSerializer

    def post(self, request: Request, pk: int) -> Response:
        change = services.change_request_get(pk)
        data = _input(self.input_serializer, request.data)
        change = self.run(
            request, change_request_id=change.pk, actor=request_actor(request), **data
        )
        return Response(s.ChangeRequestOutputSerializer(change).data)

    def run(self, request: Request, **kwargs: Any) -> ChangeRequest:
        raise NotImplementedError


def _command(name: str, serializer: type, description: str) -> Any:
    return extend_schema(
        operation_id=f"change_requests_{name}",
        tags=["change requests"],
        request=serializer,
        responses={200: s.ChangeRequestOutputSerializer, **_errors(400, 404, 409)},
        description=description,
    )


class ChangeRequestApproveApi(ChangeRequestCommandApi):
    @_command(
        "approve",
        s.ReviewInputSerializer,
        "Approve (not your own). With the last approval needed the change "
        "applies at once; `status` says applied or failed (reason in `result`).",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, request: Request, **kwargs: Any) -> ChangeRequest:
        change = services.change_request_get(kwargs["change_request_id"])
        _require_operation_permission(request, change.operation)
        return services.change_request_approve(**kwargs)


class ChangeRequestRejectApi(ChangeRequestCommandApi):
    @_command("reject", s.ReviewInputSerializer, "Reject (not your own): it ends.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, request: Request, **kwargs: Any) -> ChangeRequest:
        change = services.change_request_get(kwargs["change_request_id"])
        _require_operation_permission(request, change.operation)
        return services.change_request_reject(**kwargs)


class ChangeRequestCancelApi(ChangeRequestCommandApi):
    input_serializer = s.CancelInputSerializer

    @_command("cancel", s.CancelInputSerializer, "Cancel your own pending request.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, request: Request, **kwargs: Any) -> ChangeRequest:
        return services.change_request_cancel(**kwargs)


# -- scheduled changes ------------------------------------------------------------


class ScheduledChangeApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = ScheduledChange


class ScheduledChangeListCreateApi(ScheduledChangeApi):
    @extend_schema(
        operation_id="scheduled_changes_list",
        tags=["scheduled changes"],
        parameters=[s.ChangeFilterSerializer],
        responses={200: s.ScheduledChangeOutputSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        queryset = _filtered(ScheduledChange.objects.all(), request)
        return _paginated(self, request, queryset, s.ScheduledChangeOutputSerializer)

    @extend_schema(
        operation_id="scheduled_changes_create",
        tags=["scheduled changes"],
        request=s.ScheduledChangeInputSerializer,
        responses={201: s.ScheduledChangeOutputSerializer, **_errors(400, 409)},
        description="Schedule a change. At its time it is applied, or refused "
        "when a field it sets changed since (the stale-version rule).",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.ScheduledChangeInputSerializer, request.data)
        _require_operation_permission(request, data["operation"])
        change = services.scheduled_change_create(
            actor=request_actor(request),
            operation=data["operation"],
            arguments=data["arguments"],
            run_at=data["run_at"],
            expected_version=data.get("version"),
            reason=data["reason"],
        )
        return Response(
            s.ScheduledChangeOutputSerializer(change).data,
            status=status.HTTP_201_CREATED,
        )


class ScheduledChangeDetailApi(ScheduledChangeApi):
    @extend_schema(
        operation_id="scheduled_changes_retrieve",
        tags=["scheduled changes"],
        responses={200: s.ScheduledChangeOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, pk: int) -> Response:
        change = services.scheduled_change_get(pk)
        return Response(s.ScheduledChangeOutputSerializer(change).data)


class ScheduledChangeCancelApi(ScheduledChangeApi):
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="scheduled_changes_cancel",
        tags=["scheduled changes"],
        request=s.CancelInputSerializer,
        responses={200: s.ScheduledChangeOutputSerializer, **_errors(400, 404, 409)},
    )
    def post(self, request: Request, pk: int) -> Response:
        change = services.scheduled_change_get(pk)
        data = _input(s.CancelInputSerializer, request.data)
        change = services.scheduled_change_cancel(
            scheduled_change_id=change.pk, actor=request_actor(request), **data
        )
        return Response(s.ScheduledChangeOutputSerializer(change).data)


# -- approval policies --------------------------------------------------------------


class ApprovalPolicyApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = ApprovalPolicy
    permission_actions = {"PATCH": ("change", "add")}

    @extend_schema(
        operation_id="approval_policies_retrieve",
        tags=["change requests"],
        responses={200: s.ApprovalPolicySerializer, **_errors(404)},
    )
    def get(self, request: Request, env: str) -> Response:
        environment = environment_get(env)
        policy = ApprovalPolicy.objects.filter(environment=environment).first()
        return Response(
            s.ApprovalPolicySerializer(
                policy or ApprovalPolicy(environment=environment)
            ).data
        )

    @extend_schema(
        operation_id="approval_policies_partial_update",
        tags=["change requests"],
        request=s.ApprovalPolicySerializer,
        responses={200: s.ApprovalPolicySerializer, **_errors(400, 404)},
        description="How many approvals each kind of change needs (0: immediate).",
    )
    def patch(self, request: Request, env: str) -> Response:
        environment = environment_get(env)
        data = _input(s.ApprovalPolicySerializer, request.data)
        policy = services.approval_policy_set(
            actor=request_actor(request),
            environment=environment,
            **{name.removesuffix("_approvals"): count for name, count in data.items()},
        )
        return Response(s.ApprovalPolicySerializer(policy).data)
