"""The evaluation routes of a relay, as a WSGI app: the hot path's interface.

``make_app(ruleset_source=, key_resolver=, fallback=)`` is
``flags.hotpath.make_app`` when that module exists. Until then this adapter
answers the same routes (native evaluate, OFREP single and bulk, the
ruleset) with the answer logic of flags.api.eval_views, reading the ruleset
and the key from the callables instead of the database, and hands every
other path to ``fallback``. Not yet the hot path itself: it still builds a
Django request and response object per call (no ORM, no middleware).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Iterable
from typing import Any

try:  # pragma: no cover - the hot path, once it exists
    from flags.hotpath import make_app  # type: ignore[attr-defined]
except ImportError:  # the adapter below
    make_app = None

from django.core.handlers.wsgi import WSGIRequest
from django.http import HttpResponse

from controlplane.api.errors import RequestRefused, error_response, json_response
from controlplane.apikeys.authentication import KeyRefused, bearer_token
from controlplane.apikeys.cache import ApiKeyInfo
from controlplane.exceptions import DomainError
from flags import engine
from flags.api import eval_views as ev

RulesetSource = Callable[[str], tuple[engine.Ruleset, bool]]
KeyResolver = Callable[[str], ApiKeyInfo | None]
_RULESET = re.compile(r"^/api/v1/environments/([^/]+)/ruleset$")
_OFREP_ONE = "/ofrep/v1/evaluate/flags/"


def _server_key(request: WSGIRequest, resolve: KeyResolver, env: str | None = None):
    raw = bearer_token(request)
    if raw is None:
        raise KeyRefused(
            401, "unauthorized", "send a server key as 'Authorization: Bearer <key>'"
        )
    info = resolve(raw)
    if info is None:
        raise KeyRefused(401, "unauthorized", "unknown or revoked API key")
    if not info.is_server:
        raise KeyRefused(
            403, "forbidden", "this endpoint needs a server key, not a management key"
        )
    if env is not None and info.environment_key != env:
        raise KeyRefused(403, "forbidden", f"this key cannot read environment {env!r}")
    return info


def _native(request, source: RulesetSource, resolve: KeyResolver) -> HttpResponse:
    try:
        key = _server_key(request, resolve)
        body, _raw = ev._read_body(request)
        context = ev._native_context(body)
        wanted = ev._native_requests(body)
        ruleset, stale = source(key.environment_key)
    except KeyRefused as exc:
        return error_response(exc.status, exc.code, exc.message)
    except RequestRefused as exc:
        return error_response(exc.status, exc.code, exc.message, field=exc.field)
    except DomainError as exc:
        return error_response(
            exc.http_status, exc.code, exc.message, headers=ev._retry_after(exc)
        )
    started = ev._perf()
    if wanted is None:
        answers = [engine.evaluate(ruleset, k, context) for k in sorted(ruleset.flags)]
    else:
        answers = [
            engine.evaluate(ruleset, k, context, default, value_type=value_type)
            for k, value_type, default in wanted
        ]
    ev._counted(answers, started, ruleset)
    out = {
        "environment": ruleset.environment,
        "version": ruleset.version,
        "stale": stale,
        "flags": [ev._native_answer(answer) for answer in answers],
    }
    if wanted and all(answer.error_code for answer in answers):
        codes = {answer.error_code for answer in answers}
        if codes == {engine.ErrorCode.FLAG_NOT_FOUND}:
            status, code = 404, engine.ErrorCode.FLAG_NOT_FOUND
        elif codes == {engine.ErrorCode.TYPE_MISMATCH}:
            status, code = 400, engine.ErrorCode.TYPE_MISMATCH
        else:
            status, code = 400, next(iter(sorted(codes)))
        out.update(ev.error_body_for(code, answers))
        return json_response(out, status)
    return json_response(out)


def _ofrep(request, source, resolve, flag_key: str | None) -> HttpResponse:
    try:
        key = _server_key(request, resolve)
        body, raw = ev._read_body(request)
        context = ev._ofrep_context(body)
        ruleset, stale = source(key.environment_key)
    except (KeyRefused, RequestRefused, DomainError) as exc:
        return ev._ofrep_refused(exc, flag_key)
    started = ev._perf()
    if flag_key is not None:
        answer = engine.evaluate(ruleset, flag_key, context)
        ev._counted([answer], started, ruleset)
        if answer.error_code is None:
            return json_response(ev._ofrep_success(answer, ruleset, stale))
        status = 404 if answer.error_code == engine.ErrorCode.FLAG_NOT_FOUND else 400
        return json_response(ev._ofrep_failure(answer), status)
    suffix = "-stale" if stale else ""
    etag = f'"{ruleset.environment}-{ruleset.version}-{zlib.crc32(raw):08x}{suffix}"'
    if etag in ev._if_none_match(request):
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    answers = [engine.evaluate(ruleset, k, context) for k in sorted(ruleset.flags)]
    ev._counted(answers, started, ruleset)
    flags = [
        ev._ofrep_success(a, ruleset, stale)
        if a.error_code is None
        else ev._ofrep_failure(a)
        for a in answers
    ]
    return json_response({"flags": flags}, headers={"ETag": etag})


def _ruleset(request, source, resolve, env: str) -> HttpResponse:
    try:
        _server_key(request, resolve, env)
        ruleset, stale = source(env)
    except KeyRefused as exc:
        return error_response(exc.status, exc.code, exc.message)
    except DomainError as exc:
        return error_response(
            exc.http_status, exc.code, exc.message, headers=ev._retry_after(exc)
        )
    headers = {
        "ETag": f'"{ruleset.version}"',
        "X-Ruleset-Stale": "true" if stale else "false",
        "Cache-Control": "no-cache",
    }
    if headers["ETag"] in ev._if_none_match(request):
        response = HttpResponse(status=304)
    else:
        payload = json.dumps(ruleset.data, separators=(",", ":"), ensure_ascii=False)
        response = HttpResponse(payload.encode(), content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response


def _adapter(
    *, ruleset_source: RulesetSource, key_resolver: KeyResolver, fallback: Any = None
) -> Callable:
    def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        request = WSGIRequest(environ)
        method = request.method
        if path == "/api/v1/evaluate":
            response = (
                _native(request, ruleset_source, key_resolver)
                if method == "POST"
                else ev._method_not_allowed("POST")
            )
        elif path == "/ofrep/v1/evaluate/flags" or path.startswith(_OFREP_ONE):
            flag_key = path[len(_OFREP_ONE) :] if path.startswith(_OFREP_ONE) else None
            response = (
                _ofrep(request, ruleset_source, key_resolver, flag_key)
                if method == "POST"
                else ev._method_not_allowed("POST")
            )
        elif (match := _RULESET.match(path)) is not None:
            response = (
                _ruleset(request, ruleset_source, key_resolver, match.group(1))
                if method in ("GET", "HEAD")
                else ev._method_not_allowed("GET")
            )
        elif fallback is not None:
            return fallback(environ, start_response)
        else:
            response = error_response(404, "NOT_FOUND", f"no route {path}")
        status = f"{response.status_code} {response.reason_phrase}"
        start_response(status, list(response.items()))
        return [response.content]

    return application


if make_app is None:
    make_app = _adapter
