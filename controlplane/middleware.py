"""Refuse request framing and query strings no view can handle safely.

Two checks run before any view, for the admin and the API alike:

- **query strings**: every parameter name and value must be UTF-8 text
  without NUL (PostgreSQL cannot compare a NUL, and undecodable bytes would
  silently become U+FFFD). A refusal is a 400 naming the parameter: the
  native JSON error body under ``/api/``, a plain-text page elsewhere;
- **chunked bodies** (``Transfer-Encoding`` without ``Content-Length``) on
  the DRF views that parse with ``UntrustedJSONParser``: Django would read
  them as empty, so a command would run without the body it was sent. When
  the WSGI server says the input is terminated (``wsgi.input_terminated``,
  as gunicorn does) the body is read, at most one byte past the size limit,
  and handed on with its length; otherwise the answer is 411.

The decisions about text are ``controlplane.api.input``'s.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from django.core.handlers.wsgi import LimitedStream
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse

from controlplane.api.exception_handler import error_body
from controlplane.api.input import text_problem
from controlplane.api.parsers import UntrustedJSONParser, max_body_bytes

_NOT_UTF8 = "is not valid UTF-8 text"


def _decoded(part: bytes) -> tuple[str, str | None]:
    """Return the text of one percent-encoded part and its problem, if any."""
    raw = unquote_to_bytes(part.replace(b"+", b" "))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("utf-8", "replace"), _NOT_UTF8
    return text, text_problem(text, allow_nul=False)


def query_problem(query_string: str) -> tuple[str, str] | None:
    """Return ``(parameter, problem)`` for the first bad parameter, or None."""
    if not query_string:
        return None
    try:
        raw = query_string.encode("latin-1")  # PEP 3333: bytes as latin-1
    except UnicodeEncodeError:
        raw = query_string.encode("utf-8", "surrogateescape")
    for pair in raw.split(b"&"):
        if not pair:
            continue
        raw_name, _, raw_value = pair.partition(b"=")
        name, name_problem = _decoded(raw_name)
        shown = name.replace("\x00", "\\x00")
        if name_problem:
            return shown, f"the parameter name {name_problem}"
        _, value_problem = _decoded(raw_value)
        if value_problem:
            return shown, value_problem
    return None


def _refused(request: HttpRequest, status: int, code: str, field: str, message: str):
    if request.path.startswith("/api/"):
        body = error_body(code, f"{field}: {message}", {field: [message]})
        return JsonResponse(body, status=status)
    response = HttpResponseBadRequest(
        f"Bad request: query parameter {field!r} {message}.\n",
        content_type="text/plain; charset=utf-8",
    )
    response.status_code = status
    return response


def _uses_untrusted_json_parser(view_func: Callable[..., Any]) -> bool:
    view_class = getattr(view_func, "cls", None)
    parsers = getattr(view_class, "parser_classes", None) or ()
    return any(
        isinstance(parser, type) and issubclass(parser, UntrustedJSONParser)
        for parser in parsers
    )


class UntrustedRequestMiddleware:
    """Answer 400 for bad query strings and 411 for unreadable chunked bodies."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        problem = query_problem(request.META.get("QUERY_STRING", ""))
        if problem is not None:
            return _refused(request, 400, "invalid", *problem)
        return self.get_response(request)

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple,
        view_kwargs: dict,
    ) -> HttpResponse | None:
        meta = request.META
        if "HTTP_TRANSFER_ENCODING" not in meta or meta.get("CONTENT_LENGTH"):
            return None
        if not _uses_untrusted_json_parser(view_func):
            return None
        if not meta.get("wsgi.input_terminated"):
            body = error_body(
                "length_required",
                "send the body with a Content-Length header (chunked bodies are "
                "not read by this server)",
            )
            return JsonResponse(body, status=411)
        limit = max_body_bytes()
        stream = meta["wsgi.input"]
        raw = stream.read() if limit is None else stream.read(limit + 1)
        # The parser sees a body of known length (and refuses it past the
        # limit with 413), exactly as if Content-Length had been sent.
        meta["CONTENT_LENGTH"] = str(len(raw))
        request._stream = LimitedStream(io.BytesIO(raw), len(raw))  # type: ignore[attr-defined]
        return None
