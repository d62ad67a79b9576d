"""503 answers while the database is unreachable, hung or refusing.

A request whose database access fails (``OperationalError`` or
``InterfaceError``, which the connect, statement and read timeouts raise) is
the server's trouble, not a bug: the management API answers the native JSON
error ``database_unavailable`` and the admin a short HTML page, both 503
with ``Retry-After``, instead of a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils.html import escape

from controlplane.conf import setting
from controlplane.db import UNAVAILABLE_ERRORS
from controlplane.exceptions import DatabaseUnavailable

log = logging.getLogger(__name__)

MESSAGE = "the database is unavailable; retry later"


def is_unavailable(exc: BaseException) -> bool:
    """Return True when ``exc`` means the database cannot answer."""
    return isinstance(exc, (*UNAVAILABLE_ERRORS, DatabaseUnavailable))


def retry_after() -> str:
    """Return the Retry-After header value of a 503."""
    return str(int(setting("DATABASE_RETRY_AFTER")))


def _message(exc: BaseException) -> str:
    return exc.message if isinstance(exc, DatabaseUnavailable) else MESSAGE


def api_response(exc: BaseException):
    """Return the DRF 503 response for ``exc`` (native error body)."""
    from rest_framework.response import Response

    from controlplane.api.exception_handler import error_body

    log.warning("database unavailable: %s", exc)
    return Response(
        error_body(DatabaseUnavailable.code, _message(exc)),
        status=503,
        headers={"Retry-After": retry_after()},
    )


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>503 Service Unavailable</title></head>
<body><h1>Service unavailable</h1>
<p>{message}. Try again in {seconds} seconds.</p></body></html>
"""


class DatabaseUnavailableMiddleware:
    """Answer 503 (HTML, or JSON under /api/) for a view's database failure."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(
        self, request: HttpRequest, exception: Exception
    ) -> HttpResponse | None:
        if not is_unavailable(exception):
            return None
        log.warning("database unavailable during %s: %s", request.path, exception)
        seconds = retry_after()
        if request.path.startswith(("/api/", "/ofrep/")):
            from controlplane.api.errors import json_response
            from controlplane.api.exception_handler import error_body

            return json_response(
                error_body(DatabaseUnavailable.code, _message(exception)),
                503,
                headers={"Retry-After": seconds},
            )
        response = HttpResponse(
            _PAGE.format(message=escape(_message(exception)), seconds=seconds),
            status=503,
            content_type="text/html; charset=utf-8",
        )
        response["Retry-After"] = seconds
        return response
