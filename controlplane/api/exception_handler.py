"""The one place that turns errors into HTTP answers for the REST API.

Every error body has the same shape::

    {"code": "version_conflict", "message": "...", "errors": {"version": ["..."]}}

``errors`` maps a field path (``merchants[3].key``, ``rules[0].serve``) to its
messages and is empty when the error is not about one field. Domain errors
from ``controlplane.exceptions`` keep their own code and status (and extras such as
``current_version``); DRF's own errors (validation, parse, authentication,
permission, not found, method) get the same shape. Anything else is a bug
and is left to Django (a 500 that is logged).

A view with a protocol of its own (OFREP) can override
``get_exception_handler()`` to answer in that protocol's shape instead.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from controlplane import unavailable
from controlplane.api.errors import drain_body
from controlplane.api.parsers import PayloadTooLarge, payload_too_large
from controlplane.exceptions import DomainError

_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ParseError: "parse_error",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "throttled",
    PayloadTooLarge: "payload_too_large",
}


def flatten_errors(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """Return DRF's nested error detail as ``{field path: [messages]}``.

    List items become ``[n]`` and nested objects ``.name``; errors that are
    not about a field (``non_field_errors``) go under ``""``.
    """
    flat: dict[str, list[str]] = {}
    if isinstance(detail, dict):
        for name, value in detail.items():
            name = "" if name in ("non_field_errors", "__all__") else str(name)
            if prefix and name.isdigit():
                path = f"{prefix}[{name}]"
            elif prefix:
                path = f"{prefix}.{name}" if name else prefix
            else:
                path = name
            flat.update(_merge(flat, flatten_errors(value, path)))
    elif isinstance(detail, list):
        if all(not isinstance(item, (dict, list)) for item in detail):
            flat.setdefault(prefix, []).extend(str(item) for item in detail)
        else:
            for index, item in enumerate(detail):
                if item in ({}, [], None):
                    continue
                flat.update(_merge(flat, flatten_errors(item, f"{prefix}[{index}]")))
    elif detail is not None:
        flat.setdefault(prefix, []).append(str(detail))
    return flat


def _merge(
    into: dict[str, list[str]], more: dict[str, list[str]]
) -> dict[str, list[str]]:
    return {key: into.get(key, []) + messages for key, messages in more.items()}


def _first_message(errors: dict[str, list[str]]) -> str:
    for field, messages in errors.items():
        if messages:
            return f"{field}: {messages[0]}" if field else messages[0]
    return "invalid input"


def error_body(
    code: str, message: str, errors: dict[str, list[str]] | None = None
) -> dict:
    """Return the error body every API error uses."""
    return {"code": code, "message": message, "errors": errors or {}}


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """Map a raised exception to a JSON error response (None = let it 500)."""
    if unavailable.is_unavailable(exc):  # unreachable or hung database: 503, not 500
        return unavailable.api_response(exc)
    if isinstance(exc, DomainError):
        set_rollback()
        body = exc.as_dict()
        body.setdefault("errors", {})
        return Response(body, status=exc.http_status)
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"": exc.messages}
        exc = exceptions.ValidationError(detail)
    elif isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        # Django's own size check (request.body): a 413 here, not its 400 page.
        exc = payload_too_large()
    if not isinstance(exc, exceptions.APIException):
        return None
    if isinstance(exc, PayloadTooLarge):
        drain_body(context.get("request"))  # so the client reads the 413
    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))
    if isinstance(exc, exceptions.ValidationError):
        errors = flatten_errors(exc.detail)
        body = error_body("invalid", _first_message(errors), errors)
        code = status.HTTP_400_BAD_REQUEST
    else:
        name = next((c for k, c in _CODES.items() if isinstance(exc, k)), "error")
        body = error_body(name, str(exc.detail))
        code = exc.status_code
    set_rollback()
    return Response(body, status=code, headers=headers)
