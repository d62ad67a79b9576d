"""Evaluation endpoints as Django views: native, OFREP, and the ruleset.

In production these paths are answered by the hot path (``flags.hotpath``,
dispatched before Django in ``controlplane.wsgi``); these views serve them
wherever Django's own handler runs (the test client, Django's live server,
an entry point without the hot path). Both call the same functions in
``flags.hotpath.answers``, so the answers cannot drift; a view only turns
the request into plain values and the answer into an ``HttpResponse``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from controlplane.api.errors import read_body
from flags.hotpath import answers


def _sources() -> answers.Sources:
    # looked up per request, so tests and relays may swap the functions
    from controlplane.apikeys.cache import resolve_key
    from flags.snapshot import get_ruleset

    return answers.Sources(ruleset_source=get_ruleset, key_resolver=resolve_key)


def _body_of(request: HttpRequest) -> answers.BodyReader:
    def read(max_bytes: int) -> bytes:
        return read_body(request, max_bytes)

    return read


def _response(answer: answers.Answer) -> HttpResponse:
    status, headers, body = answer
    content_type = None
    rest = []
    for name, value in headers:
        if name == "Content-Type":
            content_type = value
        else:
            rest.append((name, value))
    response = HttpResponse(body, status=status, content_type=content_type)
    for name, value in rest:
        response[name] = value
    return response


@csrf_exempt
def evaluate(request: HttpRequest) -> HttpResponse:
    """POST /api/v1/evaluate: answers for the requested flags (or all)."""
    return _response(
        answers.answer_evaluate(
            request.method, request.META, _body_of(request), _sources()
        )
    )


@csrf_exempt
def ofrep_evaluate_flag(request: HttpRequest, key: str) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags/{key}: one flag, OFREP shapes and codes."""
    return _response(
        answers.answer_ofrep_flag(
            request.method, request.META, _body_of(request), _sources(), key
        )
    )


@csrf_exempt
def ofrep_evaluate_flags(request: HttpRequest) -> HttpResponse:
    """POST /ofrep/v1/evaluate/flags: every flag; ETag / If-None-Match -> 304."""
    return _response(
        answers.answer_ofrep_flags(
            request.method, request.META, _body_of(request), _sources()
        )
    )


@csrf_exempt
def environment_ruleset(request: HttpRequest, key: str) -> HttpResponse:
    """GET /api/v1/environments/{key}/ruleset: the engine's data; ETag = version."""
    return _response(
        answers.answer_ruleset(request.method, request.META, _sources(), key)
    )
