"""Bearer API keys for DRF views and for the plain Django views of the hot path.

- missing, unknown or revoked key -> 401 with ``WWW-Authenticate: Bearer``
- a key of another scope or environment -> 403
- the database unreachable and the key neither cached nor in the last known
  good state on disk -> ``ApiKeysUnavailable`` (503 with Retry-After): a
  valid caller must not be told its key is wrong
"""

from __future__ import annotations

from typing import Any

from rest_framework import authentication, exceptions, permissions

from controlplane.apikeys.cache import ApiKeyInfo, resolve_key

WWW_AUTHENTICATE = 'Bearer realm="controlplane"'


class KeyRefused(Exception):
    """A request's key is missing or not allowed; carries the HTTP answer."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def bearer_token(request: Any) -> str | None:
    """Return the raw key of ``Authorization: Bearer <key>`` or None."""
    header = request.META.get("HTTP_AUTHORIZATION", "")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer":
        return None
    token = token.strip()
    return token or None


def server_key_for(request: Any, environment_key: str | None = None) -> ApiKeyInfo:
    """Return the request's server key; raise KeyRefused (401/403) otherwise.

    Raises ApiKeysUnavailable (503) when the key cannot be verified because
    the database is unreachable.

    With ``environment_key``, the key must belong to that environment. For
    plain Django views on the hot path (no query when the cache is warm).
    """
    raw = bearer_token(request)
    if raw is None:
        raise KeyRefused(
            401, "unauthorized", "send a server key as 'Authorization: Bearer <key>'"
        )
    info = resolve_key(raw)
    if info is None:
        raise KeyRefused(401, "unauthorized", "unknown or revoked API key")
    if not info.is_server:
        raise KeyRefused(
            403, "forbidden", "this endpoint needs a server key, not a management key"
        )
    if environment_key is not None and info.environment_key != environment_key:
        raise KeyRefused(
            403, "forbidden", f"this key cannot read environment {environment_key!r}"
        )
    return info


class _ServerKeyUser:
    """Stands for the caller of a server key in ``request.user`` (no permissions)."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, info: ApiKeyInfo) -> None:
        self.api_key = info
        self.username = f"api_key:{info.name}"

    def get_username(self) -> str:
        return self.username

    def has_perm(self, perm: str, obj: Any = None) -> bool:
        return False

    def has_perms(self, perms: Any, obj: Any = None) -> bool:
        return False

    def as_actor(self):
        return self.api_key.as_actor()


class ServerKeyAuthentication(authentication.BaseAuthentication):
    """DRF: a server key; ``request.auth`` is its ApiKeyInfo.

    ``request.user`` carries no Django permissions; use ``HasServerKey`` and
    check the environment with ``require_environment``.
    """

    def authenticate(self, request):
        raw = bearer_token(request)
        if raw is None:
            return None
        info = resolve_key(raw)
        if info is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        if not info.is_server:
            raise exceptions.PermissionDenied("this endpoint needs a server key")
        return _ServerKeyUser(info), info

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE


class ManagementKeyAuthentication(authentication.BaseAuthentication):
    """DRF: a management key; ``request.user`` is the key's service user."""

    def authenticate(self, request):
        raw = bearer_token(request)
        if raw is None:
            return None
        info = resolve_key(raw)
        if info is None:
            raise exceptions.AuthenticationFailed("unknown or revoked API key")
        if not info.is_management:
            raise exceptions.PermissionDenied(
                "a server key can only evaluate and report; use a management key"
            )
        from django.contrib.auth import get_user_model

        user = get_user_model().objects.filter(pk=info.user_id, is_active=True).first()
        if user is None:
            raise exceptions.AuthenticationFailed("the key's service user is inactive")
        return user, info

    def authenticate_header(self, request):
        return WWW_AUTHENTICATE


class HasServerKey(permissions.BasePermission):
    """Allow requests authenticated by a server key."""

    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, ApiKeyInfo) and request.auth.is_server


def require_environment(request: Any, environment_key: str) -> ApiKeyInfo:
    """Return the request's server key; raise 403 if it is for another environment."""
    info = request.auth
    if not isinstance(info, ApiKeyInfo) or not info.is_server:
        raise exceptions.NotAuthenticated("send a server key")
    if info.environment_key != environment_key:
        raise exceptions.PermissionDenied(
            f"this key cannot use environment {environment_key!r}"
        )
    return info
