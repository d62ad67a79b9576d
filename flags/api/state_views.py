"""Management API of flag states and overrides (the gated changes, issue 12)."""

from __future__ import annotations

from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    extend_schema,
)
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from controlplane.api.permissions import (
    request_actor,
)
from controlplane.exceptions import NotFound
from flags import selectors, services
from flags.api import override_serializers as ovs
from flags.api import serializers as s
from flags.api.views import (
    ENV_PARAM,
    FLAG_PARAM,
    MERCHANT_PARAM,
    ManagementApi,
    _errors,
    _input,
    _paginated,
)
from flags.changes import gate
from flags.changes.api.views import pending_response
from flags.models import (
    Environment,
    Flag,
    FlagState,
    MerchantOverride,
)

# -- flag states --------------------------------------------------------------


def _state(key: str, env: str) -> tuple[Flag, Environment, FlagState]:
    flag, environment = selectors.flag_get(key), selectors.environment_get(env)
    return (
        flag,
        environment,
        selectors.flag_state_get(flag=flag, environment=environment),
    )


class FlagStateDetailApi(ManagementApi):
    permission_model = FlagState

    @extend_schema(
        operation_id="flag_states_retrieve",
        tags=["flag states"],
        parameters=[FLAG_PARAM, ENV_PARAM],
        responses={200: s.FlagStateOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, key: str, env: str) -> Response:
        return Response(s.FlagStateOutputSerializer(_state(key, env)[2]).data)

    @extend_schema(
        operation_id="flag_states_update",
        tags=["flag states"],
        parameters=[FLAG_PARAM, ENV_PARAM],
        request=s.FlagStateUpdateInputSerializer,
        responses={200: s.FlagStateOutputSerializer, **_errors(202, 400, 404, 409)},
        description="Replace the serving fields. `version` is required: a stale "
        "version answers 409 `version_conflict` with `current_version`.",
    )
    def put(self, request: Request, key: str, env: str) -> Response:
        return self._update(request, key, env, partial=False)

    @extend_schema(
        operation_id="flag_states_partial_update",
        tags=["flag states"],
        parameters=[FLAG_PARAM, ENV_PARAM],
        request=s.FlagStateUpdateInputSerializer,
        responses={200: s.FlagStateOutputSerializer, **_errors(202, 400, 404, 409)},
        description="Change some serving fields. `version` is required.",
    )
    def patch(self, request: Request, key: str, env: str) -> Response:
        return self._update(request, key, env, partial=True)

    def _update(
        self, request: Request, key: str, env: str, *, partial: bool
    ) -> Response:
        flag, environment, _ = _state(key, env)
        data = _input(s.FlagStateUpdateInputSerializer, request, partial=partial)
        actor, version = request_actor(request), data.pop("version")
        outcome = gate.submit(
            actor=actor,
            operation="flag_state.update",
            arguments=gate.state_arguments(flag=key, environment=env, **data),
            expected_version=version,
            apply=lambda: services.flag_state_update(
                actor=actor,
                flag=flag,
                environment=environment,
                expected_version=version,
                **data,
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        return Response(s.FlagStateOutputSerializer(outcome.result).data)


class FlagStateCommandApi(ManagementApi):
    """Base of the one-view-per-command endpoints on a flag state."""

    permission_model = FlagState
    permission_actions = {"POST": ("change",)}
    input_serializer: type = s.FlagStateVersionInputSerializer
    operation: str = ""  # the gated operation (flags.changes)

    def post(self, request: Request, key: str, env: str) -> Response:
        flag, environment, _ = _state(key, env)
        data = _input(self.input_serializer, request)
        actor = request_actor(request)
        outcome = gate.submit(
            actor=actor,
            operation=self.operation,
            arguments=gate.state_arguments(flag=key, environment=env, **data),
            expected_version=data.get("version"),
            apply=lambda: self.run(
                actor=actor, flag=flag, environment=environment, **data
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        return Response(s.FlagStateOutputSerializer(outcome.result).data)

    def run(self, **kwargs: Any) -> FlagState:
        raise NotImplementedError


def _command_schema(name: str, serializer: type, description: str) -> Any:
    return extend_schema(
        operation_id=f"flag_states_{name}",
        tags=["flag states"],
        parameters=[FLAG_PARAM, ENV_PARAM],
        request=serializer,
        description=description,
        responses={200: s.FlagStateOutputSerializer, **_errors(202, 400, 404, 409)},
    )


class FlagStateKillApi(FlagStateCommandApi):
    input_serializer = s.FlagStateKillInputSerializer
    operation = "flag_state.kill"

    @_command_schema(
        "kill",
        s.FlagStateKillInputSerializer,
        "Kill switch: everyone gets the off variation now. Never refused for a "
        "version; idempotent.",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)

    def run(self, **kwargs: Any) -> FlagState:
        return services.flag_state_kill(**kwargs)


class FlagStateRestoreApi(FlagStateCommandApi):
    input_serializer = s.FlagStateKillInputSerializer
    operation = "flag_state.restore"

    @_command_schema(
        "restore",
        s.FlagStateKillInputSerializer,
        "Undo a kill: targeting on again as before. 409 when not killed.",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)

    def run(self, **kwargs: Any) -> FlagState:
        return services.flag_state_restore(**kwargs)


class FlagStateEnableApi(FlagStateCommandApi):
    enabled = True
    operation = "flag_state.enable"

    @_command_schema(
        "enable",
        s.FlagStateVersionInputSerializer,
        "Turn targeting on (overrides, rules and fallthrough apply).",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)

    def run(self, *, version: int | None, **kwargs: Any) -> FlagState:
        return services.flag_state_set_enabled(
            enabled=self.enabled, expected_version=version, **kwargs
        )


class FlagStateDisableApi(FlagStateEnableApi):
    enabled = False
    operation = "flag_state.disable"

    @_command_schema(
        "disable",
        s.FlagStateVersionInputSerializer,
        "Turn targeting off: everyone gets the off variation.",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)


class FlagStatePercentageApi(FlagStateCommandApi):
    input_serializer = s.FlagStatePercentageInputSerializer
    operation = "flag_state.percentage"

    @_command_schema(
        "percentage",
        s.FlagStatePercentageInputSerializer,
        "Serve the treatment (`on` for bool flags) to this percentage by "
        "default, in 0.001% steps.",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)

    def run(self, *, version: int | None, **kwargs: Any) -> FlagState:
        return services.flag_state_set_percentage(expected_version=version, **kwargs)


class FlagStateServeApi(FlagStateCommandApi):
    input_serializer = s.FlagStateServeInputSerializer
    operation = "flag_state.serve"

    @_command_schema(
        "serve",
        s.FlagStateServeInputSerializer,
        "Serve one variation to everyone not matched by an override or rule.",
    )
    def post(self, request: Request, key: str, env: str) -> Response:
        return super().post(request, key, env)

    def run(self, *, version: int | None, **kwargs: Any) -> FlagState:
        return services.flag_state_serve(expected_version=version, **kwargs)


# -- overrides ----------------------------------------------------------------


class OverrideListApi(ManagementApi):
    permission_model = MerchantOverride

    @extend_schema(
        operation_id="overrides_list",
        tags=["overrides"],
        parameters=[FLAG_PARAM, ENV_PARAM, ovs.OverrideFilterSerializer],
        responses={200: ovs.OverrideOutputSerializer(many=True), **_errors(400, 404)},
    )
    def get(self, request: Request, key: str, env: str) -> Response:
        filters = _input(
            ovs.OverrideFilterSerializer, request, data=request.query_params
        )
        overrides = selectors.override_list(
            flag=selectors.flag_get(key),
            environment=selectors.environment_get(env),
            live_only=filters["live_only"],
        )
        return _paginated(self, request, overrides, ovs.OverrideOutputSerializer)


class OverrideDetailApi(ManagementApi):
    permission_model = MerchantOverride
    permission_actions = {"PUT": ("add", "change")}

    @extend_schema(
        operation_id="overrides_retrieve",
        tags=["overrides"],
        parameters=[FLAG_PARAM, ENV_PARAM, MERCHANT_PARAM],
        responses={200: ovs.OverrideOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, key: str, env: str, merchant: str) -> Response:
        override = selectors.override_list(
            flag=selectors.flag_get(key),
            environment=selectors.environment_get(env),
            merchant=selectors.merchant_get(merchant),
        ).first()
        if override is None:
            raise NotFound(
                f"merchant {merchant!r} has no override of {key} in {env}",
                field="merchant",
            )
        return Response(ovs.OverrideOutputSerializer(override).data)

    @extend_schema(
        operation_id="overrides_set",
        tags=["overrides"],
        parameters=[FLAG_PARAM, ENV_PARAM, MERCHANT_PARAM],
        request=ovs.OverrideSetInputSerializer,
        responses={200: ovs.OverrideOutputSerializer, **_errors(202, 400, 404, 409)},
        description="Create or replace the merchant's override.",
    )
    def put(self, request: Request, key: str, env: str, merchant: str) -> Response:
        flag, environment = selectors.flag_get(key), selectors.environment_get(env)
        target = selectors.merchant_get(merchant)
        data = _input(ovs.OverrideSetInputSerializer, request)
        actor = request_actor(request)
        outcome = gate.submit(
            actor=actor,
            operation="override.set",
            arguments=gate.state_arguments(
                flag=key, environment=env, merchant=merchant, **data
            ),
            apply=lambda: services.override_set(
                actor=actor,
                flag=flag,
                environment=environment,
                merchant=target,
                **data,
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        return Response(ovs.OverrideOutputSerializer(outcome.result).data)

    @extend_schema(
        operation_id="overrides_remove",
        tags=["overrides"],
        parameters=[
            FLAG_PARAM,
            ENV_PARAM,
            MERCHANT_PARAM,
            OpenApiParameter("reason", OpenApiTypes.STR, required=False),
        ],
        request=None,
        responses={204: None, **_errors(202, 400, 404)},
    )
    def delete(self, request: Request, key: str, env: str, merchant: str) -> Response:
        flag, environment = selectors.flag_get(key), selectors.environment_get(env)
        target = selectors.merchant_get(merchant)
        data = _input(
            ovs.OverrideRemoveInputSerializer, request, data=request.query_params
        )
        actor = request_actor(request)
        outcome = gate.submit(
            actor=actor,
            operation="override.remove",
            arguments=gate.state_arguments(
                flag=key, environment=env, merchant=merchant, **data
            ),
            apply=lambda: services.override_remove(
                actor=actor,
                flag=flag,
                environment=environment,
                merchant=target,
                **data,
            ),
        )
        if outcome.is_pending:
            return pending_response(outcome)
        return Response(status=status.HTTP_204_NO_CONTENT)
