"""A relay's own routes (WSGI): outcome events in, health out (flags.relay).

``POST /api/v1/events`` answers as the upstream's ingestion does (202
``{"accepted": n}``, or 400 with field errors keyed ``events[i].field`` and
nothing kept), checked by the same function
(``canary.services.outcomes.outcome_events_validate``, no database), and
keeps the batch in the outbox, fsync'd, before it answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from django.core.handlers.wsgi import WSGIRequest

from canary.services.outcomes import outcome_events_validate
from controlplane.api.errors import RequestRefused, read_json
from controlplane.apikeys.authentication import bearer_token
from controlplane.conf import setting
from controlplane.exceptions import DomainError
from flags.relay.outbox import Outbox


def _answer(start_response: Callable, status: int, body: Any) -> list[bytes]:
    payload = json.dumps(body, separators=(",", ":")).encode()
    headers = [("Content-Type", "application/json")]
    if status == 401:
        headers.append(("WWW-Authenticate", 'Bearer realm="controlplane"'))
    reasons = {200: "OK", 202: "Accepted", 401: "Unauthorized", 403: "Forbidden"}
    start_response(f"{status} {reasons.get(status, 'Error')}", headers)
    return [payload]


def make_app(
    resolve: Callable[[str], Any], outbox: Outbox, health: Callable[[], dict]
) -> Callable:
    """Return the WSGI app of the relay's own routes."""

    def application(environ: dict, start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD", "GET")
        if path == "/healthz" and method == "GET":
            return _answer(start_response, 200, health())
        if path != "/api/v1/events":
            return _answer(
                start_response,
                404,
                {"code": "not_found", "message": f"no route {path}"},
            )
        if method != "POST":
            return _answer(start_response, 405, {"code": "method_not_allowed"})
        request = WSGIRequest(environ)
        raw = bearer_token(request)
        try:
            info = resolve(raw) if raw else None
        except DomainError as exc:
            return _answer(
                start_response,
                exc.http_status,
                {"code": exc.code, "message": exc.message},
            )
        if info is None:
            message = "unknown or revoked API key" if raw else "send a server key"
            return _answer(
                start_response, 401, {"code": "not_authenticated", "message": message}
            )
        if not info.is_server:
            return _answer(
                start_response,
                403,
                {
                    "code": "permission_denied",
                    "message": "this endpoint needs a server key",
                },
            )
        try:
            body, _raw = read_json(request, setting("OUTCOME_EVENTS_MAX_BODY_BYTES"))
        except RequestRefused as exc:
            code = "invalid" if exc.code == "INVALID_REQUEST" else exc.code.lower()
            errors = {exc.field: [exc.message]} if exc.field else {}
            return _answer(
                start_response,
                exc.status,
                {"code": code, "message": exc.message, "errors": errors},
            )
        try:
            if not isinstance(body, dict) or "events" not in body:
                raise_invalid()
            outcome_events_validate(events=body["events"])
        except DomainError as exc:
            return _answer(start_response, exc.http_status, exc.as_dict())
        # an event without an id gets one in the outbox; a client's own id is
        # kept, so its retries are not counted twice either
        count = outbox.append(body["events"])
        return _answer(start_response, 202, {"accepted": count})

    return application


def raise_invalid() -> None:
    """Raise the upstream's error for a body without ``events``."""
    from controlplane.exceptions import InvalidInput

    raise InvalidInput('send an object {"events": [...]}', field="events")
