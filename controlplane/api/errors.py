"""Error bodies shared by the evaluation API and the management API.

Native bodies: ``{"code": ..., "message": ..., "errors": {field: [msg]}}``
(the shape of ``DomainError.as_dict()``). OFREP bodies follow the OFREP
specification: ``{"key", "errorCode", "errorDetails"}``.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse

from controlplane.exceptions import DomainError

WWW_AUTHENTICATE = 'Bearer realm="controlplane"'
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class RequestRefused(Exception):
    """A request the API answers with a 4xx; carries status, code and message."""

    def __init__(
        self, status: int, code: str, message: str, *, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> HttpResponse:
    """Return ``body`` as compact JSON."""
    response = HttpResponse(
        _dumps(body).encode(),
        status=status,
        content_type="application/json",
    )
    if headers:
        for name, value in headers.items():
            response[name] = value
    return response


def error_body(code: str, message: str, field: str | None = None) -> dict[str, Any]:
    """Return the native error body."""
    body: dict[str, Any] = {"code": code, "message": message}
    if field:
        body["errors"] = {field: [message]}
    return body


def error_response(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    """Return a native error response (401 carries ``WWW-Authenticate``)."""
    headers = dict(headers or {})
    if status == 401:
        headers.setdefault("WWW-Authenticate", WWW_AUTHENTICATE)
    return json_response(error_body(code, message, field), status, headers)


def domain_error_response(exc: DomainError) -> HttpResponse:
    """Return the response for a service's DomainError."""
    return json_response(exc.as_dict(), exc.http_status)


def ofrep_error_response(
    status: int,
    error_code: str,
    details: str,
    *,
    key: str | None = None,
) -> HttpResponse:
    """Return an OFREP error body (``key`` only for single-flag answers)."""
    body: dict[str, Any] = {"errorCode": error_code, "errorDetails": details}
    if key is not None:
        body = {"key": key, **body}
    headers = {"WWW-Authenticate": WWW_AUTHENTICATE} if status == 401 else None
    return json_response(body, status, headers)


def read_json_object(request: HttpRequest, max_bytes: int) -> dict[str, Any]:
    """Return the request's JSON object body; raise RequestRefused otherwise.

    413 over ``max_bytes``, 415 for a content type other than JSON, 400
    PARSE_ERROR for malformed JSON or a body that is not an object. An empty
    body is an empty object.
    """
    length = request.META.get("CONTENT_LENGTH") or "0"
    try:
        declared = int(length)
    except ValueError:
        raise RequestRefused(400, "PARSE_ERROR", "bad Content-Length header") from None
    if declared > max_bytes:
        raise RequestRefused(
            413, "PAYLOAD_TOO_LARGE", f"the body is over {max_bytes} bytes"
        )
    content_type = request.META.get("CONTENT_TYPE", "")
    try:
        raw = request.body
    except RequestDataTooBig:
        raise RequestRefused(
            413, "PAYLOAD_TOO_LARGE", f"the body is over {max_bytes} bytes"
        ) from None
    if len(raw) > max_bytes:
        raise RequestRefused(
            413, "PAYLOAD_TOO_LARGE", f"the body is over {max_bytes} bytes"
        )
    if not raw.strip():
        return {}
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise RequestRefused(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as application/json (got {media or 'no content type'!r})",
        )
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestRefused(400, "PARSE_ERROR", f"malformed JSON: {exc}") from None
    if not isinstance(body, dict):
        raise RequestRefused(400, "PARSE_ERROR", "the body must be a JSON object")
    return body
