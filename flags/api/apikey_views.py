"""Management API of API keys (created, listed, revoked; secrets shown once)."""

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
    check_can_delegate,
    request_actor,
)
from controlplane.apikeys import services as apikey_services
from controlplane.apikeys.models import ApiKey
from controlplane.exceptions import NotFound
from flags import selectors
from flags.api import apikey_serializers as ks
from flags.api.views import (
    ManagementApi,
    _errors,
    _input,
    _paginated,
)

# -- API keys -------------------------------------------------------------------


class ApiKeyListCreateApi(ManagementApi):
    permission_model = ApiKey

    @extend_schema(
        operation_id="api_keys_list",
        tags=["api keys"],
        parameters=[ks.ApiKeyFilterSerializer],
        responses={200: ks.ApiKeyOutputSerializer(many=True), **_errors(400)},
    )
    def get(self, request: Request) -> Response:
        filters = _input(ks.ApiKeyFilterSerializer, request, data=request.query_params)
        keys = ApiKey.objects.select_related("environment", "user")
        if filters.get("scope"):
            keys = keys.filter(scope=filters["scope"])
        if not filters["include_revoked"]:
            keys = keys.filter(revoked_at__isnull=True)
        return _paginated(self, request, keys, ks.ApiKeyOutputSerializer)

    @extend_schema(
        operation_id="api_keys_create",
        tags=["api keys"],
        request=ks.ApiKeyCreateInputSerializer,
        responses={201: ks.ApiKeyCreatedOutputSerializer, **_errors(400, 404)},
        description="Create a key. The raw key is in this answer only.",
    )
    def post(self, request: Request) -> Response:
        data = _input(ks.ApiKeyCreateInputSerializer, request)
        environment = (
            selectors.environment_get(data["environment"])
            if data["environment"]
            else None
        )
        user = _service_user(data["user"]) if data["user"] else None
        if user is not None:
            check_can_delegate(request, user)
        api_key, raw = apikey_services.apikey_create(
            actor=request_actor(request),
            name=data["name"],
            scope=data["scope"],
            environment=environment,
            user=user,
        )
        body = ks.ApiKeyOutputSerializer(api_key).data | {"key": raw}
        return Response(body, status=status.HTTP_201_CREATED)


def _service_user(username: str) -> Any:
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.filter(username=username).first()
    if user is None:
        raise NotFound(f"unknown user {username!r}", field="user")
    return user


def _api_key(key_id: str) -> ApiKey:
    api_key = (
        ApiKey.objects.select_related("environment", "user")
        .filter(pk=int(key_id))
        .first()
        if key_id.isdigit() and len(key_id) < 19
        else None
    )
    if api_key is None:
        raise NotFound(f"unknown API key {key_id!r}", field="id")
    return api_key


KEY_ID_PARAM = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH, description="API key id (as listed)."
)


class ApiKeyDetailApi(ManagementApi):
    permission_model = ApiKey

    @extend_schema(
        operation_id="api_keys_retrieve",
        tags=["api keys"],
        parameters=[KEY_ID_PARAM],
        responses={200: ks.ApiKeyOutputSerializer, **_errors(404)},
    )
    def get(self, request: Request, id: str) -> Response:
        return Response(ks.ApiKeyOutputSerializer(_api_key(id)).data)


class ApiKeyRevokeApi(ManagementApi):
    permission_model = ApiKey
    permission_actions = {"POST": ("change",)}

    @extend_schema(
        operation_id="api_keys_revoke",
        tags=["api keys"],
        parameters=[KEY_ID_PARAM],
        request=None,
        responses={200: ks.ApiKeyOutputSerializer, **_errors(404, 409)},
        description="Revoke a key; serving processes refuse it within about a second.",
    )
    def post(self, request: Request, id: str) -> Response:
        api_key = apikey_services.apikey_revoke(
            actor=request_actor(request), api_key=_api_key(id)
        )
        return Response(ks.ApiKeyOutputSerializer(_api_key(str(api_key.pk))).data)
