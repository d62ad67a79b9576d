"""Bad input on the evaluation endpoints, in process against the real database.

Only input that is refused before the engine runs is sent here: the cases
that could reach mmh3 are replayed in a serving process
(tests/regressions/test_bad_input_eval.py).
"""

from __future__ import annotations

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)


def _strict(raw: bytes):
    def refuse(name: str):
        raise ValueError(name)

    return json.loads(raw, parse_constant=refuse)


@pytest.mark.parametrize(
    "path",
    ["/api/v1/evaluate", "/ofrep/v1/evaluate/flags", "/api/v1/events"],
)
def test_chunked_body__server_without_input_terminated__411(
    live_server, catalog, server_key, path
):
    # Given: Django's own server reads no body without a Content-Length
    address = urlsplit(live_server.url)
    body = json.dumps({"context": {"merchant": "m-gold"}}).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {server_key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    # When
    with socket.create_connection((address.hostname, address.port), timeout=10) as s:
        s.sendall(request)
        answer = b""
        while part := s.recv(65536):
            answer += part
    # Then: refused, not evaluated (or stored) as an empty body
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.split(b" ", 2)[1] == b"411", answer[:300]
    assert b"application/json" in head
    parsed = _strict(payload)
    if path.startswith("/ofrep/"):
        assert parsed["errorCode"] == "GENERAL"
    else:
        assert parsed["code"].upper() == "LENGTH_REQUIRED"
        assert parsed["errors"]["body"]


@pytest.mark.parametrize(
    "body, field",
    [
        (
            '{"flags": [{"key": "checkout_theme", "default": 1e999}]}',
            "flags[0].default",
        ),
        ('{"flags": [{"key": "checkout_theme", "default": NaN}]}', "flags[0].default"),
        (
            '{"flags": ["checkout_theme"], "x": ' + "[" * 5000 + "]" * 5000 + "}",
            "x[0][0]",
        ),
    ],
)
def test_evaluate__not_finite_or_too_deep__400_field_and_valid_json(
    client, catalog, auth, body, field
):
    # When
    response = client.post(
        "/api/v1/evaluate", data=body, content_type="application/json", **auth
    )
    # Then
    assert response.status_code == 400
    errors = _strict(response.content)["errors"]
    assert any(name == field or name.startswith(field + "[") for name in errors), errors
