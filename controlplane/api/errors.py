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

from controlplane.api.input import UntrustedInput, loads_json
from controlplane.exceptions import DomainError

WWW_AUTHENTICATE = 'Bearer realm="controlplane"'
# allow_nan=False: an answer is always valid JSON, never Infinity or NaN.
_dumps = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False
).encode


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


# What is left of an oversized body is read and dropped, up to this much, so
# that a client still sending it sees the 413 instead of a reset connection.
DRAIN_MAX_BYTES = 64 * 1024 * 1024
_DRAIN_CHUNK = 64 * 1024


def drain_body(request: Any) -> None:
    """Read and drop the rest of ``request``'s body (at most 64 MiB).

    Never keeps what it reads. Reads the WSGI input itself when the server
    bounds it (``wsgi.input_terminated``), else Django's length-bounded
    stream; a connection that fails meanwhile is left to the server.
    """
    django_request = getattr(request, "_request", request)
    meta = getattr(django_request, "META", None)
    if meta is None:
        return
    stream = meta["wsgi.input"] if meta.get("wsgi.input_terminated") else django_request
    left = DRAIN_MAX_BYTES
    try:
        while left > 0:
            chunk = stream.read(min(_DRAIN_CHUNK, left))
            if not chunk:
                return
            left -= len(chunk)
    except (OSError, ValueError):
        return


def _too_large(max_bytes: int) -> RequestRefused:
    return RequestRefused(
        413, "PAYLOAD_TOO_LARGE", f"the body is over {max_bytes} bytes", field="body"
    )


def read_body(request: HttpRequest, max_bytes: int) -> bytes:
    """Return the request body, never holding more than ``max_bytes + 1``.

    A declared ``Content-Length`` over ``max_bytes`` is refused (413) before
    anything is read. A body without one (``Transfer-Encoding: chunked``) is
    read from the server's input when the server says that input ends at
    the body's end (``wsgi.input_terminated``, as gunicorn and granian do),
    at most ``max_bytes + 1`` bytes of it; from a server that does not, it
    cannot be read safely and is refused with 411. No length and no transfer
    encoding is an empty body.
    """
    meta = request.META
    length = meta.get("CONTENT_LENGTH")
    if length:
        try:
            declared = int(length)
        except ValueError:
            raise RequestRefused(
                400, "PARSE_ERROR", "bad Content-Length header", field="body"
            ) from None
        if declared > max_bytes:
            drain_body(request)  # never kept: so the client reads the 413
            raise _too_large(max_bytes)
        try:
            raw = request.body
        except RequestDataTooBig:
            drain_body(request)
            raise _too_large(max_bytes) from None
    elif meta.get("wsgi.input_terminated"):
        raw = _read_terminated(meta["wsgi.input"], max_bytes)
    elif meta.get("HTTP_TRANSFER_ENCODING"):
        # Django reads nothing without a length: answering as if the body
        # were empty would evaluate or store something the caller never sent.
        raise RequestRefused(
            411,
            "LENGTH_REQUIRED",
            "send a Content-Length header (this server cannot read a chunked body)",
            field="body",
        )
    else:
        raw = b""
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    return raw


def _read_terminated(stream: Any, max_bytes: int) -> bytes:
    # A server's read(n) may return less than n before the end: loop, and
    # stop one byte past the limit so an endless body costs max_bytes + 1.
    parts: list[bytes] = []
    total = 0
    while total <= max_bytes:
        part = stream.read(max_bytes + 1 - total)
        if not part:
            break
        parts.append(part)
        total += len(part)
    return b"".join(parts)


def read_json_object(request: HttpRequest, max_bytes: int) -> dict[str, Any]:
    """Return the request's JSON object body; raise RequestRefused otherwise.

    ``read_json_body`` without the raw bytes.
    """
    return read_json_body(request, max_bytes)[0]


def read_json_body(
    request: HttpRequest, max_bytes: int
) -> tuple[dict[str, Any], bytes]:
    """Return the request's JSON object body and its raw bytes.

    As ``read_json``, and 400 PARSE_ERROR for a body that is not an object.
    """
    body, raw = read_json(request, max_bytes)
    if not isinstance(body, dict):
        raise RequestRefused(
            400, "PARSE_ERROR", "the body must be a JSON object", field="body"
        )
    return body, raw


def read_json(request: HttpRequest, max_bytes: int) -> tuple[Any, bytes]:
    """Return the request's JSON body (any JSON value) and its raw bytes.

    Raise RequestRefused: 413 over ``max_bytes`` and 411 for a body it
    cannot read (see ``read_body``), 415 for a content type other than JSON,
    400 PARSE_ERROR for malformed JSON, 400 INVALID_REQUEST naming the
    field for a value ``controlplane.api.input.loads_json`` refuses (a lone
    surrogate, a number that is not finite, nesting too deep). An empty
    body is an empty object.
    """
    raw = read_body(request, max_bytes)
    if not raw.strip():
        return {}, raw
    content_type = request.META.get("CONTENT_TYPE", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        got = ascii(media) if media else "no content type"
        raise RequestRefused(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            f"send the body as application/json (got {got})",
            field="body",
        )
    try:
        return loads_json(raw), raw
    except UntrustedInput as exc:
        if not exc.field:  # the document itself does not parse
            raise RequestRefused(
                400, "PARSE_ERROR", exc.message, field="body"
            ) from None
        raise RequestRefused(
            400, "INVALID_REQUEST", f"{exc.field} {exc.message}", field=exc.field
        ) from None
