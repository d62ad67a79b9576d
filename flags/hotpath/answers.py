"""The evaluation endpoints' answers, shared by the hot path and Django.

Each ``answer_*`` function takes the request as plain values (method, the
WSGI environ or Django's ``META``, a function that reads the body within a
limit) and returns ``(status, headers, body bytes)``. The hot path
(``flags.hotpath.app``) and the Django views (``flags.api.eval_views``)
both call them, so the two cannot drift: same key check, same ruleset
snapshot, same bodies, codes, ETags and metrics.

No ORM access here: keys and rulesets come from the sources passed in
(``Sources``), which answer from memory when warm.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from controlplane.api.errors import WWW_AUTHENTICATE, RequestRefused, error_body
from controlplane.api.input import UntrustedInput
from controlplane.apikeys.authentication import KeyRefused
from controlplane.apikeys.cache import ApiKeyInfo
from controlplane.exceptions import DomainError
from controlplane.unavailable import retry_after
from flags import engine, metrics
from flags.hotpath import bodies, usage
from flags.hotpath.codec import dumps, loads
from flags.hotpath.settings import max_body_bytes

Headers = list[tuple[str, str]]
Answer = tuple[int, Headers, bytes]
BodyReader = Callable[[int], bytes]

JSON = "application/json"
_JSON_HEADERS: Headers = [("Content-Type", JSON)]
_VALUE_TYPES = frozenset(engine.VALUE_TYPES)
_evaluate = engine.evaluate


@dataclass(frozen=True, slots=True)
class Sources:
    """Where keys and rulesets come from (the control plane's or a relay's)."""

    ruleset_source: Callable[[str], tuple[engine.Ruleset, bool]]
    key_resolver: Callable[[str], ApiKeyInfo | None]


# -- shared pieces ----------------------------------------------------------------


def json_answer(body: Any, status: int = 200, headers: Headers | None = None) -> Answer:
    """Return ``body`` encoded as JSON, with ``headers`` after Content-Type."""
    return status, (_JSON_HEADERS + headers) if headers else _JSON_HEADERS, dumps(body)


def native_error(
    status: int,
    code: str,
    message: str,
    *,
    field: str | None = None,
    headers: Headers | None = None,
) -> Answer:
    """Return a native error (401 carries ``WWW-Authenticate``)."""
    extra = list(headers or ())
    if status == 401 and not any(name == "WWW-Authenticate" for name, _ in extra):
        extra.append(("WWW-Authenticate", WWW_AUTHENTICATE))
    return json_answer(error_body(code, message, field), status, extra)


def ofrep_error(
    status: int, error_code: str, details: str, *, key: str | None = None
) -> Answer:
    """Return an OFREP error body (``key`` only for single-flag answers)."""
    body: dict[str, Any] = {"errorCode": error_code, "errorDetails": details}
    if key is not None:
        body = {"key": key, **body}
    headers = [("WWW-Authenticate", WWW_AUTHENTICATE)] if status == 401 else None
    return json_answer(body, status, headers)


def method_not_allowed(allowed: str) -> Answer:
    """Return 405 with ``Allow``."""
    return native_error(
        405, "METHOD_NOT_ALLOWED", f"use {allowed}", headers=[("Allow", allowed)]
    )


def _retry_after(exc: DomainError) -> Headers | None:
    """Return Retry-After for a 503 (database unreachable, nothing on disk)."""
    if exc.http_status != 503:
        return None
    return [("Retry-After", retry_after())]


def server_key(
    meta: Mapping[str, Any],
    resolve: Callable[[str], ApiKeyInfo | None],
    environment_key: str | None = None,
) -> ApiKeyInfo:
    """Return the request's server key; raise KeyRefused (401/403) otherwise.

    ``Authorization: Bearer <key>``, resolved by ``resolve`` (the in-memory
    key cache); raises ApiKeysUnavailable (503) when it cannot be verified.
    With ``environment_key``, the key must belong to that environment.
    """
    header = meta.get("HTTP_AUTHORIZATION", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise KeyRefused(
            401, "unauthorized", "send a server key as 'Authorization: Bearer <key>'"
        )
    info = resolve(token)
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


def read_json_object(
    meta: Mapping[str, Any], read_body: BodyReader
) -> tuple[dict[str, Any], bytes]:
    """Return the JSON object body and its bytes; raise RequestRefused.

    413 over ``EVAL_MAX_BODY_BYTES`` and 411 for an unreadable chunked body
    (from ``read_body``), 415 for a media type other than JSON, 400
    PARSE_ERROR for malformed JSON or a body that is not an object, 400
    INVALID_REQUEST naming the field of a refused value (INVALID_CONTEXT
    when that field is in the context). An empty body is an empty object.
    """
    raw = read_body(max_body_bytes())
    if not raw or raw.isspace():
        return {}, raw
    media = meta.get("CONTENT_TYPE", "")
    if media != JSON:
        media = media.split(";", 1)[0].strip().lower()
        if media != JSON and not (
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
        body = loads(raw)
    except UntrustedInput as exc:
        if not exc.field:  # the document itself does not parse
            raise RequestRefused(
                400, "PARSE_ERROR", exc.message, field="body"
            ) from None
        field = exc.field
        code = (
            "INVALID_CONTEXT"
            if field == "context" or field.startswith(("context.", "context["))
            else "INVALID_REQUEST"
        )
        raise RequestRefused(400, code, f"{field} {exc.message}", field=field) from None
    if type(body) is not dict:
        raise RequestRefused(
            400, "PARSE_ERROR", "the body must be a JSON object", field="body"
        )
    return body, raw


def _counted(
    answers: list[engine.Evaluation], started: float, ruleset: engine.Ruleset
) -> None:
    # Only the ruleset's flags become labels: callers choose the keys they send.
    metrics.evaluations_served(answers, ruleset.flags, perf_counter() - started)
    usage.record(ruleset.environment, answers, ruleset.flags)


# -- native -------------------------------------------------------------------------


def _native_context(body: dict[str, Any]) -> dict[str, Any]:
    context = body.get("context", {})
    if type(context) is not dict:
        raise RequestRefused(
            400, "INVALID_CONTEXT", "context must be an object", field="context"
        )
    merchant = context.get("merchant", context.get("targetingKey"))
    if merchant is not None and type(merchant) is not str:
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
    if type(flags) is list and len(flags) == 1 and type(flags[0]) is str:
        return [(flags[0], None, None)]  # the usual request, checked at once
    if type(flags) is not list or len(flags) > 1000:
        raise RequestRefused(
            400, "INVALID_REQUEST", "flags must be a list of flag keys", field="flags"
        )
    wanted = []
    for index, item in enumerate(flags):
        if type(item) is str:
            wanted.append((item, None, None))
            continue
        if type(item) is not dict or type(item.get("key")) is not str:
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


def answer_evaluate(
    method: str, meta: Mapping[str, Any], read_body: BodyReader, sources: Sources
) -> Answer:
    """POST /api/v1/evaluate: answers for the requested flags (or all)."""
    if method != "POST":
        return method_not_allowed("POST")
    try:
        key = server_key(meta, sources.key_resolver)
        body, _raw = read_json_object(meta, read_body)
        context = _native_context(body)
        wanted = _native_requests(body)
        ruleset, stale = sources.ruleset_source(key.environment_key)
    except KeyRefused as exc:
        return native_error(exc.status, exc.code, exc.message)
    except RequestRefused as exc:
        return native_error(exc.status, exc.code, exc.message, field=exc.field)
    except DomainError as exc:
        return native_error(
            exc.http_status, exc.code, exc.message, headers=_retry_after(exc)
        )
    started = perf_counter()
    if wanted is None:
        answers = [_evaluate(ruleset, flag, context) for flag in sorted(ruleset.flags)]
    elif len(wanted) == 1:  # the usual request: no comprehension
        flag, value_type, default = wanted[0]
        answers = [_evaluate(ruleset, flag, context, default, value_type=value_type)]
    else:
        answers = [
            _evaluate(ruleset, flag, context, default, value_type=value_type)
            for flag, value_type, default in wanted
        ]
    _counted(answers, started, ruleset)
    if wanted:
        for answer in answers:
            if answer.error_code is None:
                break
        else:  # nothing asked for could be answered: the request is wrong
            return _unanswerable(answers, ruleset, stale)
    return (
        200,
        _JSON_HEADERS,
        bodies.native_body(bodies.bodies_for(ruleset), stale, answers),
    )


def _unanswerable(
    answers: list[engine.Evaluation], ruleset: engine.Ruleset, stale: bool
) -> Answer:
    """Return the 404/400 of a native request none of whose flags answered."""
    codes = {answer.error_code for answer in answers}
    if codes == {engine.ErrorCode.FLAG_NOT_FOUND}:
        status, code = 404, engine.ErrorCode.FLAG_NOT_FOUND
    elif codes == {engine.ErrorCode.TYPE_MISMATCH}:
        status, code = 400, engine.ErrorCode.TYPE_MISMATCH
    else:
        status, code = 400, next(iter(sorted(codes)))
    message = "; ".join(answer.error_message or "" for answer in answers)
    return json_answer(
        {
            "environment": ruleset.environment,
            "version": ruleset.version,
            "stale": stale,
            "flags": [bodies.native_item(answer) for answer in answers],
            "code": code,
            "message": message,
        },
        status,
    )


# -- OFREP ----------------------------------------------------------------------------


def _ofrep_context(body: dict[str, Any]) -> dict[str, Any]:
    context = body.get("context", {})
    if context is None:
        context = {}
    if type(context) is not dict:
        raise RequestRefused(400, "INVALID_CONTEXT", "context must be an object")
    if "targetingKey" in context:
        target = context["targetingKey"]
        if type(target) is not str:
            raise RequestRefused(
                400, "INVALID_CONTEXT", "context.targetingKey must be a string"
            )
        context = {k: v for k, v in context.items() if k != "targetingKey"}
        context["merchant"] = target
    elif "merchant" in context and type(context["merchant"]) is not str:
        raise RequestRefused(
            400, "INVALID_CONTEXT", "context.merchant must be a string"
        )
    return context


def _ofrep_prelude(
    meta: Mapping[str, Any], read_body: BodyReader, sources: Sources
) -> tuple[engine.Ruleset, bool, dict[str, Any], bytes]:
    key = server_key(meta, sources.key_resolver)
    body, raw = read_json_object(meta, read_body)
    context = _ofrep_context(body)
    ruleset, stale = sources.ruleset_source(key.environment_key)
    return ruleset, stale, context, raw


def _ofrep_refused(exc: Exception, key: str | None) -> Answer:
    if isinstance(exc, KeyRefused):
        return ofrep_error(exc.status, "GENERAL", exc.message, key=key)
    if isinstance(exc, RequestRefused):
        code = exc.code if exc.code in ("PARSE_ERROR", "INVALID_CONTEXT") else "GENERAL"
        if exc.code == "INVALID_REQUEST":  # a value refused outside the context
            code = "PARSE_ERROR"
        return ofrep_error(exc.status, code, exc.message, key=key)
    assert isinstance(exc, DomainError)
    status, headers, body = ofrep_error(
        exc.http_status, "GENERAL", exc.message, key=key
    )
    return status, headers + (_retry_after(exc) or []), body


def answer_ofrep_flag(
    method: str,
    meta: Mapping[str, Any],
    read_body: BodyReader,
    sources: Sources,
    key: str,
) -> Answer:
    """POST /ofrep/v1/evaluate/flags/{key}: one flag, OFREP shapes and codes."""
    if method != "POST":
        return method_not_allowed("POST")
    try:
        ruleset, stale, context, _raw = _ofrep_prelude(meta, read_body, sources)
    except (KeyRefused, RequestRefused, DomainError) as exc:
        return _ofrep_refused(exc, key)
    started = perf_counter()
    answer = _evaluate(ruleset, key, context)
    _counted([answer], started, ruleset)
    if answer.error_code is None:
        cache = bodies.bodies_for(ruleset)
        return 200, _JSON_HEADERS, bodies.ofrep_fragment(cache, answer, stale)
    status = 404 if answer.error_code == engine.ErrorCode.FLAG_NOT_FOUND else 400
    return json_answer(bodies.ofrep_failure(answer), status)


def if_none_match(meta: Mapping[str, Any]) -> set[str]:
    """Return the entity tags of ``If-None-Match`` (weak ones as strong)."""
    header = meta.get("HTTP_IF_NONE_MATCH", "")
    if not header:
        return set()
    return {tag.strip().removeprefix("W/") for tag in header.split(",")}


def answer_ofrep_flags(
    method: str, meta: Mapping[str, Any], read_body: BodyReader, sources: Sources
) -> Answer:
    """POST /ofrep/v1/evaluate/flags: every flag; ETag / If-None-Match -> 304."""
    if method != "POST":
        return method_not_allowed("POST")
    try:
        ruleset, stale, context, raw = _ofrep_prelude(meta, read_body, sources)
    except (KeyRefused, RequestRefused, DomainError) as exc:
        return _ofrep_refused(exc, None)
    # the answers depend only on the ruleset version and the context sent
    etag = (
        f'"{ruleset.environment}-{ruleset.version}-{zlib.crc32(raw):08x}'
        f'{"-stale" if stale else ""}"'
    )
    if etag in if_none_match(meta):
        return 304, [("ETag", etag)], b""
    started = perf_counter()
    answers = [_evaluate(ruleset, flag, context) for flag in sorted(ruleset.flags)]
    _counted(answers, started, ruleset)
    cache = bodies.bodies_for(ruleset)
    body = (
        b'{"flags":['
        + b",".join([bodies.ofrep_fragment(cache, answer, stale) for answer in answers])
        + b"]}"
    )
    return 200, [("Content-Type", JSON), ("ETag", etag)], body


# -- ruleset for local evaluation -------------------------------------------------


def answer_ruleset(
    method: str, meta: Mapping[str, Any], sources: Sources, environment_key: str
) -> Answer:
    """GET /api/v1/environments/{key}/ruleset: the engine's data; ETag = version."""
    if method not in ("GET", "HEAD"):
        return method_not_allowed("GET")
    try:
        server_key(meta, sources.key_resolver, environment_key=environment_key)
        ruleset, stale = sources.ruleset_source(environment_key)
    except KeyRefused as exc:
        return native_error(exc.status, exc.code, exc.message)
    except DomainError as exc:
        return native_error(
            exc.http_status, exc.code, exc.message, headers=_retry_after(exc)
        )
    etag = f'"{ruleset.version}"'
    headers = [
        ("ETag", etag),
        ("X-Ruleset-Stale", "true" if stale else "false"),
        ("Cache-Control", "no-cache"),
    ]
    if etag in if_none_match(meta):
        return 304, headers, b""
    payload = bodies.ruleset_payload(bodies.bodies_for(ruleset))
    return 200, [("Content-Type", JSON), *headers], payload
