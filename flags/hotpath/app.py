"""The hot path: a small WSGI application for the four evaluation routes.

``POST /api/v1/evaluate``, ``POST /ofrep/v1/evaluate/flags/{key}``,
``POST /ofrep/v1/evaluate/flags`` and
``GET /api/v1/environments/{key}/ruleset`` are answered here, before and
without Django's request cycle (URL resolution, middleware, request and
response objects: 16x the evaluation itself, issue 10). Every other path
goes to ``fallback`` (the Django application in ``controlplane.wsgi``).

What the middleware did for these routes is done here too, at a fraction of
the cost: the ``ALLOWED_HOSTS`` check (400), the query-string check (400),
the security headers (``X-Content-Type-Options``, ``Referrer-Policy``,
``Cross-Origin-Opener-Policy``, ``X-Frame-Options``), ``X-Request-ID``
(echoed when valid, made up otherwise), ``Content-Length``, and a 503 with
``Retry-After`` for a database failure. Each answer carries
``X-Served-By: hotpath``.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from flags import metrics
from flags.hotpath import answers
from flags.hotpath.request import HostCheck, path_info, read_body

log = logging.getLogger("flags.hotpath")

StartResponse = Callable[..., Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]

EVALUATE = "/api/v1/evaluate"
OFREP_FLAGS = "/ofrep/v1/evaluate/flags"
OFREP_FLAG_PREFIX = "/ofrep/v1/evaluate/flags/"
RULESET_PREFIX = "/api/v1/environments/"
RULESET_SUFFIX = "/ruleset"
SERVED_BY = ("X-Served-By", "hotpath")

_STATUS = {
    200: "200 OK",
    304: "304 Not Modified",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    404: "404 Not Found",
    405: "405 Method Not Allowed",
    411: "411 Length Required",
    413: "413 Request Entity Too Large",
    415: "415 Unsupported Media Type",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_HTML = "text/html; charset=utf-8"
_DB_CLOSE_EVERY = 1.0  # seconds between two checks of this thread's connection


def route(path: str) -> tuple[str, str | None] | None:
    """Return ``(endpoint, path argument)`` for a hot-path route, else None."""
    if path == EVALUATE:
        return "evaluate", None
    if path.startswith("/ofrep/"):
        if path == OFREP_FLAGS:
            return "ofrep_flags", None
        if path.startswith(OFREP_FLAG_PREFIX) and len(path) > len(OFREP_FLAG_PREFIX):
            return "ofrep_flag", path[len(OFREP_FLAG_PREFIX) :]
        return None
    if path.startswith(RULESET_PREFIX) and path.endswith(RULESET_SUFFIX):
        key = path[len(RULESET_PREFIX) : -len(RULESET_SUFFIX)]
        if key and "/" not in key:
            return "ruleset", key
    return None


def _security_headers() -> list[tuple[str, str]]:
    """Return the headers Django's middleware adds to these answers."""
    from django.conf import settings

    headers = []
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append(("X-Content-Type-Options", "nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        if not isinstance(policy, str):
            policy = ",".join(policy)
        headers.append(
            ("Referrer-Policy", ",".join(v.strip() for v in policy.split(",")))
        )
    coop = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    if coop:
        headers.append(("Cross-Origin-Opener-Policy", coop))
    headers.append(("X-Frame-Options", getattr(settings, "X_FRAME_OPTIONS", "DENY")))
    return headers


class HotPath:
    """The WSGI callable ``make_app`` returns."""

    def __init__(
        self,
        *,
        sources: answers.Sources,
        fallback: WSGIApp | None,
        close_connections: bool,
    ) -> None:
        self.sources = sources
        self.fallback = fallback
        self._hosts = HostCheck()
        self._extra: list[tuple[str, str]] | None = None
        # Request ids made up here: unique per process and cheap (no
        # urandom per request), 32 hex characters like a uuid4's.
        self._id_prefix = os.urandom(10).hex()
        self._ids = itertools.count()
        self._close_connections = close_connections
        self._closed_at = 0.0

    def __call__(
        self, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        found = route(path if path.isascii() else path_info(environ))
        if found is None:
            if self.fallback is None:
                return self._send(
                    start_response,
                    environ,
                    answers.native_error(404, "not_found", "no such endpoint"),
                )
            return self.fallback(environ, start_response)
        try:
            answer = self._answer(environ, *found)
        except Exception as exc:
            answer = _failure(exc, path)
        metrics.request_answered(found[0], answer[0])
        if self._close_connections:
            self._close_old_connections()
        return self._send(start_response, environ, answer)

    def _answer(
        self, environ: dict[str, Any], endpoint: str, argument: str | None
    ) -> answers.Answer:
        if not self._hosts.is_allowed(environ):
            # what Django answers for a DisallowedHost (DEBUG off)
            return 400, [("Content-Type", _HTML)], b"<h1>Bad Request (400)</h1>"
        query = environ.get("QUERY_STRING")
        if query:
            refused = _query_refused(query, endpoint)
            if refused is not None:
                return refused
        method = environ.get("REQUEST_METHOD", "GET")
        sources = self.sources
        if endpoint == "ruleset":
            return answers.answer_ruleset(method, environ, sources, argument)

        def body(max_bytes: int) -> bytes:
            return read_body(environ, max_bytes)

        if endpoint == "evaluate":
            return answers.answer_evaluate(method, environ, body, sources)
        if endpoint == "ofrep_flag":
            return answers.answer_ofrep_flag(method, environ, body, sources, argument)
        return answers.answer_ofrep_flags(method, environ, body, sources)

    def _send(
        self,
        start_response: StartResponse,
        environ: dict[str, Any],
        answer: answers.Answer,
    ) -> Iterable[bytes]:
        status, headers, body = answer
        extra = self._extra
        if extra is None:
            extra = self._extra = _security_headers()
        incoming = environ.get("HTTP_X_REQUEST_ID")
        if not incoming or not _REQUEST_ID.match(incoming):
            incoming = f"{self._id_prefix}{next(self._ids):012x}"
        if not headers or headers[0][0] != "Content-Type":
            # Django's default for a body-less answer (304)
            headers = [("Content-Type", _HTML), *headers]
        start_response(
            _STATUS.get(status) or f"{status} Error",
            [
                *headers,
                ("Content-Length", str(len(body))),
                *extra,
                ("X-Request-ID", incoming),
                SERVED_BY,
            ],
        )
        if environ.get("REQUEST_METHOD") == "HEAD":
            return [b""]
        return [body]

    def _close_old_connections(self) -> None:
        # Django closes a request's connection when it ends (CONN_MAX_AGE);
        # warm answers run no query, so checking once a second is enough
        # for the cold ones that did.
        now = time.monotonic()
        if now - self._closed_at >= _DB_CLOSE_EVERY:
            self._closed_at = now
            from django.db import close_old_connections, connection

            if not connection.in_atomic_block:  # a test's transaction: keep it
                close_old_connections()


def _query_refused(query: str, endpoint: str) -> answers.Answer | None:
    """Return the middleware's 400 for a bad query string, or None."""
    from controlplane.middleware import query_problem

    problem = query_problem(query)
    if problem is None:
        return None
    field, message = problem
    if endpoint in ("evaluate", "ruleset"):  # under /api/: the native body
        from controlplane.api.exception_handler import error_body

        return answers.json_answer(
            error_body("invalid", f"{field}: {message}", {field: [message]}), 400
        )
    text = f"Bad request: query parameter {field!r} {message}.\n"
    return 400, [("Content-Type", "text/plain; charset=utf-8")], text.encode()


def _failure(exc: Exception, path: str) -> answers.Answer:
    """Return 503 for a database failure, else a logged 500 (no traceback out)."""
    from controlplane.exceptions import DatabaseUnavailable
    from controlplane.unavailable import MESSAGE, is_unavailable, retry_after

    if is_unavailable(exc):
        log.warning("database unavailable during %s: %s", path, exc)
        message = exc.message if isinstance(exc, DatabaseUnavailable) else MESSAGE
        return answers.native_error(
            503,
            DatabaseUnavailable.code,
            message,
            headers=[("Retry-After", retry_after())],
        )
    log.exception("hot path failed on %s", path)
    return answers.native_error(500, "server_error", "internal error")


def make_app(
    *,
    ruleset_source: Callable[[str], tuple[Any, bool]] | None = None,
    key_resolver: Callable[[str], Any] | None = None,
    fallback: WSGIApp | None = None,
) -> WSGIApp:
    """Return the hot path as a WSGI callable.

    ``ruleset_source(environment_key) -> (engine.Ruleset, stale)`` and
    ``key_resolver(raw_key) -> ApiKeyInfo | None`` default to the control
    plane's ``flags.snapshot.get_ruleset`` and
    ``controlplane.apikeys.cache.resolve_key``. Requests for any other path
    go to ``fallback`` (404 JSON without one). With the defaults, the
    thread's database connection is closed when Django would have closed
    it (checked at most once a second).
    """
    close_connections = ruleset_source is None or key_resolver is None
    # the bound methods behind get_ruleset and resolve_key: one call less
    if ruleset_source is None:
        from flags.snapshot import store

        ruleset_source = store().get_ruleset
    if key_resolver is None:
        from controlplane.apikeys.cache import key_cache

        key_resolver = key_cache.resolve
    return HotPath(
        sources=answers.Sources(
            ruleset_source=ruleset_source, key_resolver=key_resolver
        ),
        fallback=fallback,
        close_connections=close_connections,
    )
