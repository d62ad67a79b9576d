"""Evaluation endpoints: native, OFREP, and the ruleset for local evaluation.

Plain Django views: this is the hot path. A warm request runs no database
query (API key and ruleset come from memory) and does no DRF work.
"""

from __future__ import annotations

import json
import time
import zlib
from typing import Any

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.api.errors import (
    RequestRefused,
    error_response,
    json_response,
    ofrep_error_response,
    read_json_body,
)
from controlplane.apikeys.authentication import KeyRefused, server_key_for
from controlplane.conf import setting
from controlplane.exceptions import DomainError
from controlplane.unavailable import retry_after
from flags import engine, metrics
from flags.snapshot import get_ruleset

_perf = time.perf_counter
_VALUE_TYPES = frozenset(engine.VALUE_TYPES)


def _method_not_allowed(allowed: str) -> HttpResponse:
    response = error_response(405, "METHOD_NOT_ALLOWED", f"use {allowed}")
    response["Allow"] = allowed
    return response


def _retry_after(exc: DomainError) -> dict[str, str] | None:
    """Return Retry-After for a 503 (database unreachable, nothing on disk)."""
    if exc.http_status != 503:
        return None
    return {"Retry-After": retry_after()}


def _read_body(request: HttpRequest) -> tuple[dict[str, Any], bytes]:
    """Return the JSON body and its bytes; a bad context value is INVALID_CONTEXT."""
    try:
        return read_json_body(request, setting("EVAL_MAX_BODY_BYTES"))
    except RequestRefused as exc:
        field = exc.field or ""
        if exc.code == "INVALID_REQUEST" and (
            field == "context" or field.startswith(("context.", "context["))
        ):
            exc.code = "INVALID_CONTEXT"
        raise


def _counted(
    answers: list[engine.Evaluation], started: float, ruleset: engine.Ruleset
) -> None:
    metrics.evaluation_timed(_perf() - started)
    # Only the ruleset's flags become labels: callers choose the keys they send.
    metrics.evaluations_counted(answers, ruleset.flags)


# -- native -------------------------------------------------------------------


def _native_answer(answer: engine.Evaluation) -> dict[str, Any]:
    item = {
        "key": answer.flag_key,
        "value": answer.value,
        "variation": answer.variation,
        "reason": answer.reason,
        "level": answer.level,
    }
    if answer.error_code is not None:
        item["error_code"] = answer.error_code
        item["error_message"] = answer.error_message
    return item


def _native_context(body: dict[str, Any]) -> dict[str, Any]:
    context = body.get("context", {})
    if not isinstance(context, dict):
        raise RequestRefused(
            400, "INVALID_CONTEXT", "context must be an object", field="context"
        )
    merchant = context.get("merchant", context.get("targetingKey"))
    if merchant is not None and not isinstance(merchant, str):
        raise RequestRefused(
            400,
            "INVALID_CONTEXT",
            "context.merchant must be a string",
            field="context.merchant",
        )
    if "targetingKey" in context:
        context = {k: v for k, v in context.items() if k != "targetingKey"}
        if merchant is not None:
            context["merchant"] = merchant
    return context


def _native_requests(body: dict[str, Any]) -> list[tuple[str, str | None, Any]] | None:
    """Return ``(key, value_type, default)`` per requested flag, None = all."""
    flags = body.get("flags")
    if flags is None:
        return None
    if not isinstance(flags, list) or len(flags) > 1000:
        raise RequestRefused(
            400, "INVALID_REQUEST", "flags must be a list of flag keys", field="flags"
        )
    wanted = []
    for index, item in enumerate(flags):
        if isinstance(item, str):
            wanted.append((item, None, None))
            continue
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise RequestRefused(
                400,
                "INVALID_REQUEST",
                f"flags[{index}] must be a key or {{key, type, default}}",
                field=f"flags[{index}]",
            )
        value_type = item.get("type")
        if value_type is not None and value_type not in _VALUE_TYPES:
            raise RequestRefused(
                400,
                "INVALID_REQUEST",
                f"flags[{index}].type must be one of {', '.join(engine.VALUE_TYPES)}",
                field=f"flags[{index}].type",
            )
        wanted.append((item["key"], value_type, item.get("default")))
    return wanted


@csrf_exempt
def evaluate(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/evaluate: answers for the requested flags (or all)."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        key = server_key_for(request)
        body, _raw = _read_body(request)
        context = _native_context(body)
        wanted = _native_requests(body)
        ruleset, stale = get_ruleset(key.environment_key)
    except KeyRefused as exc:
        return error_response(exc.status, exc.code, exc.message)
    except RequestRefused as exc:
        return error_response(exc.status, exc.code, exc.message, field=exc.field)
    except DomainError as exc:
        return error_response(
            exc.http_status, exc.code, exc.message, headers=_retry_after(exc)
        )
    started = _perf()
    evaluate_one = engine.evaluate
    if wanted is None:
        answers = [
            evaluate_one(ruleset, flag_key, context)
            for flag_key in sorted(ruleset.flags)
        ]
    else:
        answers = [
            evaluate_one(ruleset, flag_key, context, default, value_type=value_type)
            for flag_key, value_type, default in wanted
        ]
    _counted(answers, started, ruleset)
    body = {
        "environment": ruleset.environment,
        "version": ruleset.version,
        "stale": stale,
        "flags": [_native_answer(answer) for answer in answers],
    }
    if wanted and all(answer.error_code for answer in answers):
        # nothing asked for could be answered: the request itself is wrong
        codes = {answer.error_code for answer in answers}
        if codes == {engine.ErrorCode.FLAG_NOT_FOUND}:
            status, code = 404, engine.ErrorCode.FLAG_NOT_FOUND
        elif codes == {engine.ErrorCode.TYPE_MISMATCH}:
            status, code = 400, engine.ErrorCode.TYPE_MISMATCH
        else:
            status, code = 400, next(iter(sorted(codes)))
        body.update(error_body_for(code, answers))
        return json_response(body, status)
    return json_response(body)


def error_body_for(code: str, answers: list[engine.Evaluation]) -> dict[str, Any]:
    return {"code": code, "message": "; ".join(a.error_message or "" for a in answers)}


# -- OFREP ---------------------------------------------------------------------


def _ofrep_context(body: dict[str, Any]) -> dict[str, Any]:
    context = body.get("context", {})
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise RequestRefused(400, "INVALID_CONTEXT", "context must be an object")
    if "targetingKey" in context:
        target = context["targetingKey"]
        if not isinstance(target, str):
            raise RequestRefused(
                400, "INVALID_CONTEXT", "context.targetingKey must be a string"
            )
        context = {k: v for k, v in context.items() if k != "targetingKey"}
        context["merchant"] = target
    elif "merchant" in context and not isinstance(context["merchant"], str):
        raise RequestRefused(
            400, "INVALID_CONTEXT", "context.merchant must be a string"
        )
    return context


def _ofrep_success(
    answer: engine.Evaluation, ruleset: engine.Ruleset, stale: bool
) -> dict:
    return {
        "key": answer.flag_key,
        "value": answer.value,
        "reason": answer.reason,
        "variant": answer.variation,
        "metadata": {
            "level": answer.level,
            "version": answer.version,
            "environment": ruleset.environment,
            "stale": stale,
        },
    }


def _ofrep_failure(answer: engine.Evaluation) -> dict:
    return {
        "key": answer.flag_key,
        "errorCode": answer.error_code,
        "errorDetails": answer.error_message or "",
    }


def _ofrep_prelude(request: HttpRequest) -> tuple[engine.Ruleset, bool, dict, bytes]:
    key = server_key_for(request)
    body, raw = _read_body(request)
    context = _ofrep_context(body)
    ruleset, stale = get_ruleset(key.environment_key)
    return ruleset, stale, context, raw


def _ofrep_refused(exc: Exception, key: str | None) -> HttpResponse:
    if isinstance(exc, KeyRefused):
        return ofrep_error_response(exc.status, "GENERAL", exc.message, key=key)
    if isinstance(exc, RequestRefused):
        code = exc.code if exc.code in ("PARSE_ERROR", "INVALID_CONTEXT") else "GENERAL"
        if exc.code == "INVALID_REQUEST":  # a value refused outside the context
            code = "PARSE_ERROR"
        return ofrep_error_response(exc.status, code, exc.message, key=key)
    assert isinstance(exc, DomainError)
    response = ofrep_error_response(exc.http_status, "GENERAL", exc.message, key=key)
    for name, value in (_retry_after(exc) or {}).items():
        response[name] = value
    return response


@csrf_exempt
def ofrep_evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags/{key}: one flag, OFREP shapes and codes."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        ruleset, stale, context, _raw = _ofrep_prelude(request)
    except (KeyRefused, RequestRefused, DomainError) as exc:
        return _ofrep_refused(exc, key)
    started = _perf()
    answer = engine.evaluate(ruleset, key, context)
    _counted([answer], started, ruleset)
    if answer.error_code is None:
        return json_response(_ofrep_success(answer, ruleset, stale))
    status = 404 if answer.error_code == engine.ErrorCode.FLAG_NOT_FOUND else 400
    return json_response(_ofrep_failure(answer), status)


@csrf_exempt
def ofrep_evaluate_flags(request: HttpRequest) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags: every flag; ETag / If-None-Match -> 304."""
    if request.method != "POST":
        return _method_not_allowed("POST")
    try:
        ruleset, stale, context, raw = _ofrep_prelude(request)
    except (KeyRefused, RequestRefused, DomainError) as exc:
        return _ofrep_refused(exc, None)
    # the answers depend only on the ruleset version and the context sent
    etag = f'"{ruleset.environment}-{ruleset.version}-{zlib.crc32(raw):08x}{"-stale" if stale else ""}"'
    if etag in _if_none_match(request):
        response = HttpResponse(status=304)
        response["ETag"] = etag
        return response
    started = _perf()
    answers = [
        engine.evaluate(ruleset, flag_key, context)
        for flag_key in sorted(ruleset.flags)
    ]
    _counted(answers, started, ruleset)
    flags = [
        _ofrep_success(answer, ruleset, stale)
        if answer.error_code is None
        else _ofrep_failure(answer)
        for answer in answers
    ]
    return json_response({"flags": flags}, headers={"ETag": etag})


def _if_none_match(request: HttpRequest) -> set[str]:
    header = request.META.get("HTTP_IF_NONE_MATCH", "")
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


# -- ruleset for local evaluation ---------------------------------------------

_serialized: dict[tuple[str, int], bytes] = {}


@csrf_exempt
def environment_ruleset(request: HttpRequest, key: str) -> HttpResponse:
    """GET /api/v1/environments/{key}/ruleset: the engine's plain data; ETag = version."""
    if request.method not in ("GET", "HEAD"):
        return _method_not_allowed("GET")
    try:
        server_key_for(request, environment_key=key)
        ruleset, stale = get_ruleset(key)
    except KeyRefused as exc:
        return error_response(exc.status, exc.code, exc.message)
    except DomainError as exc:
        return error_response(
            exc.http_status, exc.code, exc.message, headers=_retry_after(exc)
        )
    etag = f'"{ruleset.version}"'
    headers = {
        "ETag": etag,
        "X-Ruleset-Stale": "true" if stale else "false",
        "Cache-Control": "no-cache",
    }
    if etag in _if_none_match(request):
        response = HttpResponse(status=304)
        for name, value in headers.items():
            response[name] = value
        return response
    cache_key = (key, ruleset.version)
    payload = _serialized.get(cache_key)
    if payload is None:
        payload = json.dumps(
            ruleset.data, separators=(",", ":"), ensure_ascii=False
        ).encode()
        for old in [k for k in _serialized if k[0] == key]:
            _serialized.pop(old, None)
        _serialized[cache_key] = payload
    response = HttpResponse(payload, content_type="application/json")
    for name, value in headers.items():
        response[name] = value
    return response
