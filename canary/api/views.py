"""Rollout management API: thin views over ``canary.services``.

One view per command (start, approve, pause, resume, abort, fail-phase,
rollback). Errors come from the services as ``DomainError`` and are mapped
by ``controlplane.api.exception_handler`` (an invalid transition is a 409).
Permissions are Django model permissions (``controlplane.api.permissions``):
commands need ``canary.change_rollout``; creating or changing a sql check
also needs ``canary.manage_sql_checks``.
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import renderers, status
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from canary import services
from canary.api import serializers as s
from canary.models import CheckRun, HealthCheck, Rollout, RolloutStatus
from canary.report import report_build
from canary.report_text import report_markdown
from controlplane.api.pagination import Pagination
from controlplane.api.permissions import HasModelPermission, request_actor
from controlplane.exceptions import InvalidInput
from flags.changes import gate
from flags.changes.api.views import pending_response
from flags.selectors import environment_get, flag_get

TAGS = ["rollouts"]


class MarkdownRenderer(renderers.BaseRenderer):
    """``?format=md`` on the report: the Markdown a person reads."""

    media_type = "text/markdown"
    format = "md"
    charset = "utf-8"

    def render(
        self,
        data: Any,
        accepted_media_type: str | None = None,
        renderer_context: dict | None = None,
    ) -> bytes:
        if isinstance(data, dict) and "verdict" in data:
            return report_markdown(data).encode("utf-8")
        return (
            data.get("message", "") if isinstance(data, dict) else str(data)
        ).encode("utf-8")


class RolloutApi(APIView):
    permission_classes = [HasModelPermission]
    permission_model: type = Rollout


class RolloutCommandApi(RolloutApi):
    """Base of the command endpoints: POST, ``change`` permission."""

    permission_actions = {"POST": ("change",)}
    input_serializer: type = s.ReasonInputSerializer

    def post(self, request: Request, pk: int) -> Response:
        rollout = services.rollout_get(pk)
        data = _input(self.input_serializer, request)
        rollout = self.run(rollout_id=rollout.pk, actor=request_actor(request), **data)
        return Response(_detail(rollout))

    def run(self, **kwargs: Any) -> Rollout:
        raise NotImplementedError


def _input(serializer: type, request: Request) -> dict[str, Any]:
    checked = serializer(data=request.data)
    checked.is_valid(raise_exception=True)
    return dict(checked.validated_data)


def _require_sql_permission(request: Request, *definitions: Any) -> None:
    """Refuse (403) writing a sql check without its own permission."""
    if services.checks_need_sql_permission(*definitions) and not (
        request.user.has_perm(services.SQL_CHECK_PERMISSION)
    ):
        raise PermissionDenied(
            f"You need the {services.SQL_CHECK_PERMISSION} permission to create or "
            "change a sql health check."
        )


def _detail(rollout: Rollout) -> dict:
    rollout = (
        Rollout.objects.select_related("flag", "environment")
        .prefetch_related("phases", "checks")
        .get(pk=rollout.pk)
    )
    return s.RolloutDetailOutputSerializer(rollout).data


def _command(name: str, serializer: type, description: str) -> Any:
    return extend_schema(
        operation_id=f"rollouts_{name}",
        tags=TAGS,
        request=serializer,
        responses={200: s.RolloutDetailOutputSerializer},
        description=description,
    )


# -- rollouts -----------------------------------------------------------------


class RolloutListCreateApi(RolloutApi):
    @extend_schema(
        operation_id="rollouts_list",
        tags=TAGS,
        parameters=[
            OpenApiParameter("status", str, enum=RolloutStatus.values),
            OpenApiParameter("flag", str),
            OpenApiParameter("environment", str),
        ],
        responses={200: s.RolloutOutputSerializer(many=True)},
    )
    def get(self, request: Request) -> Response:
        rollouts = Rollout.objects.select_related("flag", "environment").order_by("-id")
        wanted = request.query_params.get("status")
        if wanted:
            if wanted not in RolloutStatus.values:
                raise InvalidInput(
                    f"status: must be one of {', '.join(RolloutStatus.values)}",
                    field="status",
                )
            rollouts = rollouts.filter(status=wanted)
        if request.query_params.get("flag"):
            rollouts = rollouts.filter(flag__key=request.query_params["flag"])
        if request.query_params.get("environment"):
            rollouts = rollouts.filter(
                environment__key=request.query_params["environment"]
            )
        paginator = Pagination()
        page = paginator.paginate_queryset(rollouts, request, view=self)
        return paginator.get_paginated_response(
            s.RolloutOutputSerializer(page, many=True).data
        )

    @extend_schema(
        operation_id="rollouts_create",
        tags=TAGS,
        request=s.RolloutCreateInputSerializer,
        responses={201: s.RolloutDetailOutputSerializer},
        description="Create a draft from a named plan (`template`, "
        "`pilot_merchants`) or from explicit `phases`; `check_template` "
        "(NAME or NAME@VERSION) adds that template's checks before `checks`.",
    )
    def post(self, request: Request) -> Response:
        data = _input(s.RolloutCreateInputSerializer, request)
        template_checks = (
            services.check_template_resolve(data["check_template"]).checks
            if data.get("check_template")
            else []
        )
        _require_sql_permission(request, data.get("checks"), template_checks)
        data["flag"] = flag_get(data["flag"])
        data["environment"] = environment_get(data["environment"])
        actor = request_actor(request)
        if "template" in data:
            rollout = services.rollout_create_from_template(actor=actor, **data)
        else:
            rollout = services.rollout_create(actor=actor, **data)
        return Response(_detail(rollout), status=status.HTTP_201_CREATED)


class RolloutDetailApi(RolloutApi):
    @extend_schema(
        operation_id="rollouts_retrieve",
        tags=TAGS,
        responses={200: s.RolloutDetailOutputSerializer},
    )
    def get(self, request: Request, pk: int) -> Response:
        return Response(_detail(services.rollout_get(pk)))


class RolloutStartApi(RolloutCommandApi):
    @_command(
        "start",
        s.ReasonInputSerializer,
        "Run the preflight (checks answer once, the flag exists, the rollback levels "
        "the checks ask for are possible) and start the draft; 409 with the "
        "preflight report when refused.",
    )
    def post(self, request: Request, pk: int) -> Response:
        rollout = services.rollout_get(pk)
        data = _input(s.ReasonInputSerializer, request)
        actor = request_actor(request)
        outcome = gate.submit(  # four-eyes may turn it into a change request
            actor=actor,
            operation="rollout.start",
            arguments={"rollout": rollout.pk, "reason": data["reason"]},
            apply=lambda: services.rollout_start_checked(
                rollout_id=rollout.pk, actor=actor, reason=data["reason"]
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        rollout, report = outcome.result
        return Response({**_detail(rollout), "preflight": report.as_dict()})


class RolloutApproveApi(RolloutCommandApi):
    input_serializer = s.ApproveInputSerializer

    @_command("approve", s.ApproveInputSerializer, "Approve leaving the current phase.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Rollout:
        return services.rollout_approve(**kwargs)


class RolloutPauseApi(RolloutCommandApi):
    @_command("pause", s.ReasonInputSerializer, "Pause; checks keep running.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, *, reason: str, **kwargs: Any) -> Rollout:
        return services.rollout_pause(
            reason=reason or "paused by an operator", **kwargs
        )


class RolloutResumeApi(RolloutCommandApi):
    @_command("resume", s.ReasonInputSerializer, "Resume a paused rollout.")
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Rollout:
        return services.rollout_resume(**kwargs)


class RolloutAbortApi(RolloutCommandApi):
    @_command(
        "abort",
        s.ReasonInputSerializer,
        "Abort; the flag state captured at start is put back.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, *, reason: str, **kwargs: Any) -> Rollout:
        return services.rollout_abort(
            reason=reason or "aborted by an operator", **kwargs
        )


class RolloutFailPhaseApi(RolloutCommandApi):
    input_serializer = s.FailPhaseInputSerializer

    @_command(
        "fail_phase",
        s.FailPhaseInputSerializer,
        "Fail the current phase: pause or roll back as its checks say.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, *, reason: str, **kwargs: Any) -> Rollout:
        return services.rollout_fail_phase(
            reason=reason or "phase failed by an operator", **kwargs
        )


class RolloutRollbackApi(RolloutCommandApi):
    input_serializer = s.RollbackInputSerializer

    @_command(
        "rollback",
        s.RollbackInputSerializer,
        "Roll back now at level 1 (flag), 2 (deployment) or 3 (migrations); a "
        "rollout already rolled back escalates to the level, or 409 says why not.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, *, reason: str, **kwargs: Any) -> Rollout:
        return services.rollout_rollback(
            reason=reason or "rolled back by an operator", **kwargs
        )


class RolloutBaselineApi(RolloutCommandApi):
    input_serializer = s.BaselineInputSerializer

    @_command(
        "baseline",
        s.BaselineInputSerializer,
        "Record the values measured before start, per check name, for relative "
        "checks (a draft only; unknown names and non-numbers are a 400).",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, **kwargs: Any) -> Rollout:
        return services.rollout_set_baseline(**kwargs)


class RolloutEscalationStopApi(RolloutCommandApi):
    @_command(
        "stop_escalation",
        s.ReasonInputSerializer,
        "Stop automatic escalation after a rollback: the verification window "
        "still measures and says what it finds, the controller never escalates "
        "(an operator still can, through rollback). 409 for a completed or "
        "aborted rollout.",
    )
    def post(self, request: Request, pk: int) -> Response:
        return super().post(request, pk)

    def run(self, *, reason: str, **kwargs: Any) -> Rollout:
        return services.rollout_escalation_stop(
            reason=reason or "stopped by an operator", **kwargs
        )


class RolloutCheckRunsApi(RolloutApi):
    @extend_schema(
        operation_id="rollouts_check_runs",
        tags=TAGS,
        parameters=[
            OpenApiParameter("phase", int),
            OpenApiParameter("check", str),
            OpenApiParameter("verdict", str),
        ],
        responses={200: s.CheckRunOutputSerializer(many=True)},
    )
    def get(self, request: Request, pk: int) -> Response:
        rollout = services.rollout_get(pk)
        runs = CheckRun.objects.filter(rollout=rollout).select_related("health_check")
        phase = request.query_params.get("phase")
        if phase is not None:
            if not phase.isdigit():
                raise InvalidInput("phase: must be a phase index", field="phase")
            runs = runs.filter(phase_index=int(phase))
        if request.query_params.get("check"):
            runs = runs.filter(health_check__name=request.query_params["check"])
        if request.query_params.get("verdict"):
            runs = runs.filter(verdict=request.query_params["verdict"])
        paginator = Pagination()
        page = paginator.paginate_queryset(
            runs.order_by("measured_at", "id"), request, view=self
        )
        return paginator.get_paginated_response(
            s.CheckRunOutputSerializer(page, many=True).data
        )


class RolloutReportApi(RolloutApi):
    renderer_classes = [renderers.JSONRenderer, MarkdownRenderer]

    @extend_schema(
        operation_id="rollouts_report",
        tags=TAGS,
        responses={200: OpenApiTypes.OBJECT},
        description="The report with its verdict (proceed, fix and re-test, roll "
        "back); `?format=md` for Markdown.",
    )
    def get(self, request: Request, pk: int, format: str | None = None) -> Response:
        return Response(report_build(services.rollout_get(pk)))


# -- health checks of a draft -------------------------------------------------


class RolloutChecksApi(RolloutApi):
    permission_model = HealthCheck

    @extend_schema(
        operation_id="rollout_checks_list",
        tags=TAGS,
        responses={200: s.HealthCheckOutputSerializer(many=True)},
    )
    def get(self, request: Request, pk: int) -> Response:
        rollout = services.rollout_get(pk)
        return Response(
            s.HealthCheckOutputSerializer(rollout.checks.order_by("id"), many=True).data
        )

    @extend_schema(
        operation_id="rollout_checks_create",
        tags=TAGS,
        request=s.CheckInputSerializer,
        responses={201: s.HealthCheckOutputSerializer},
    )
    def post(self, request: Request, pk: int) -> Response:
        definition = _input(s.CheckInputSerializer, request)
        _require_sql_permission(request, definition)
        check = services.health_check_create(
            actor=request_actor(request), rollout_id=pk, check=definition
        )
        return Response(
            s.HealthCheckOutputSerializer(check).data, status=status.HTTP_201_CREATED
        )


class RolloutCheckDetailApi(RolloutApi):
    permission_model = HealthCheck

    @extend_schema(
        operation_id="rollout_checks_retrieve",
        tags=TAGS,
        responses={200: s.HealthCheckOutputSerializer},
    )
    def get(self, request: Request, pk: int, check_id: int) -> Response:
        rollout = services.rollout_get(pk)
        check = rollout.checks.filter(pk=check_id).first()
        if check is None:
            from controlplane.exceptions import NotFound

            raise NotFound(
                f"rollout {rollout.pk} has no check {check_id}", field="check"
            )
        return Response(s.HealthCheckOutputSerializer(check).data)

    @extend_schema(
        operation_id="rollout_checks_update",
        tags=TAGS,
        request=s.CheckInputSerializer,
        responses={200: s.HealthCheckOutputSerializer},
    )
    def patch(self, request: Request, pk: int, check_id: int) -> Response:
        changes = _input(s.CheckInputSerializer, request)
        _require_sql_permission(
            request,
            services.health_check_get(rollout_id=pk, check_id=check_id),
            changes,
        )
        check = services.health_check_update(
            actor=request_actor(request),
            rollout_id=pk,
            check_id=check_id,
            changes=changes,
        )
        return Response(s.HealthCheckOutputSerializer(check).data)

    @extend_schema(
        operation_id="rollout_checks_delete", tags=TAGS, responses={204: None}
    )
    def delete(self, request: Request, pk: int, check_id: int) -> Response:
        services.health_check_delete(
            actor=request_actor(request), rollout_id=pk, check_id=check_id
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class TemplateListApi(RolloutApi):
    @extend_schema(
        operation_id="rollout_templates_list",
        tags=TAGS,
        responses={200: OpenApiTypes.OBJECT},
    )
    def get(self, request: Request) -> Response:
        from canary.templates_data import PLANS

        return Response(
            [
                {
                    "name": name,
                    "description": plan["description"],
                    "phases": plan["phases"],
                }
                for name, plan in PLANS.items()
            ]
        )
