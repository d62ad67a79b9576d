"""Untrusted requests: deep JSON paths, query strings, chunked bodies.

The chunked-body tests go through real servers on 127.0.0.1: Django's
LiveServer (a WSGI server that does not decode chunked input: 411) and a
gunicorn subprocess (which does, and says so with ``wsgi.input_terminated``:
the body is read, bounded by the size limit).
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client

from controlplane.api.input import UntrustedInput, check_json_value, deep_path
from controlplane.apikeys.services import apikey_create
from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.middleware import query_problem
from flags import services
from flags.models import FlagState

KILL = "/api/v1/flags/sequential_workflow/environments/production/kill"


@pytest.mark.parametrize(
    "document",
    [
        {"rules": [{"clauses": [{"values": [[[[[]]]]]}]}]},
        [{"a": {"b": [[[[[1]]]]]}}],
        {"x": 1, "y": [0, {"z": {"w": [[[[[]]]]]}}]},
    ],
)
def test_deep_path__too_deep__same_path_as_check_json_value(document):
    # Given
    raw = json.dumps(document)
    try:
        check_json_value(document, max_depth=5)
    except UntrustedInput as exc:
        expected = exc.field
    # When
    path = deep_path(raw, max_depth=5)
    # Then
    assert path == expected and path


def test_deep_path__shallow_document__empty():
    # When / Then
    assert deep_path('{"a": [1, {"b": "[[[[[[["}]}', max_depth=3) == ""


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", None),
        ("environment=production&limit=5", None),
        ("search=caf%C3%A9+noir", None),
        ("environment=a%00b", ("environment", "must not contain a NUL character")),
        ("a=1&flag=%ff", ("flag", "is not valid UTF-8 text")),
        ("flag=%ed%a0%80", ("flag", "is not valid UTF-8 text")),
        ("t%00g=1", ("t\\x00g", "the parameter name must not contain a NUL character")),
    ],
)
def test_query_problem__query_string__first_bad_parameter_named(query, expected):
    # When / Then
    assert query_problem(query) == expected


@pytest.fixture
def kill_target(transactional_db) -> dict[str, Any]:
    """A flag state to kill and a management key allowed to kill it."""
    from controlplane.apikeys.cache import key_cache

    key_cache.clear()
    production = services.environment_create(actor=SYSTEM, key="production")
    flag = services.flag_create(actor=SYSTEM, key="sequential_workflow")
    operator = User.objects.create_superuser("chunked", password="x")
    _, raw = apikey_create(
        actor=SYSTEM, name="chunked", scope="management", user=operator
    )
    state = FlagState.objects.get(flag=flag, environment=production)
    yield {"key": raw, "state": state}
    key_cache.clear()


def _chunked_post(
    host: str, port: int, path: str, key: str, chunks: list[bytes]
) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(host, port, timeout=30)
    conn.putrequest("POST", path)
    conn.putheader("Authorization", f"Bearer {key}")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Transfer-Encoding", "chunked")
    conn.endheaders()
    for chunk in chunks:
        conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    conn.send(b"0\r\n\r\n")
    response = conn.getresponse()
    status, body = response.status, json.loads(response.read() or b"{}")
    conn.close()
    return status, body


def test_chunked_body__server_does_not_decode_it__411_and_not_killed(
    kill_target, live_server
):
    # Given: LiveServer's WSGI server does not set wsgi.input_terminated
    host, port = live_server.url.removeprefix("http://").split(":")
    events = AuditEvent.objects.count()
    # When
    status, body = _chunked_post(
        host, int(port), KILL, kill_target["key"], [b'{"reason": "errors up"}']
    )
    # Then
    assert status == 411 and body["code"] == "length_required"
    kill_target["state"].refresh_from_db()
    assert kill_target["state"].killed_at is None
    assert AuditEvent.objects.count() == events


def test_multipart_body__session_with_csrf_check__415_and_not_killed(kill_target):
    # Given: a browser-like session; its CSRF check parses request.POST
    client = Client(enforce_csrf_checks=True)
    client.force_login(User.objects.get(username="chunked"))
    client.cookies["csrftoken"] = "A" * 32
    # When
    response = client.post(
        KILL, {"reason": "errors up"}, headers={"X-CSRFToken": "A" * 32}
    )
    # Then
    assert response.status_code == 415, response.content
    assert response.json()["code"] == "unsupported_media_type"
    kill_target["state"].refresh_from_db()
    assert kill_target["state"].killed_at is None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def gunicorn_server(kill_target, tmp_path: Path) -> tuple[str, int]:
    """The project under gunicorn on 127.0.0.1, on the test database."""
    db = connection.settings_dict
    url = (
        f"postgres://{db['USER']}:{db['PASSWORD'] or ''}@{db['HOST']}:"
        f"{db['PORT'] or 5432}/{db['NAME']}"
    )
    port = _free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": url,
        "DATABASE_CONN_MAX_AGE": "0",
        "CONTROLPLANE_VAR_DIR": str(tmp_path),
    }
    server = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("gunicorn")),
            "controlplane.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "1",
        ],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError("gunicorn did not start") from None
                time.sleep(0.2)
        yield "127.0.0.1", port
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.mark.postgres
@pytest.mark.slow
def test_chunked_body__terminated_input__read_and_kill_keeps_its_reason(
    kill_target, gunicorn_server
):
    # When: gunicorn decodes the chunks and sets wsgi.input_terminated
    status, body = _chunked_post(
        *gunicorn_server, KILL, kill_target["key"], [b'{"reason": ', b'"errors up"}']
    )
    # Then
    assert status == 200, body
    kill_target["state"].refresh_from_db()
    assert kill_target["state"].kill_reason == "errors up"


@pytest.mark.postgres
@pytest.mark.slow
def test_chunked_body__over_the_limit__413_native_and_not_killed(
    kill_target, gunicorn_server, settings
):
    # Given: 3 MB in chunks, over DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB)
    chunks = [b'{"reason": "'] + [b"x" * 65536] * 48 + [b'"}']
    # When
    status, body = _chunked_post(*gunicorn_server, KILL, kill_target["key"], chunks)
    # Then
    assert status == 413 and body["code"] == "payload_too_large"
    kill_target["state"].refresh_from_db()
    assert kill_target["state"].killed_at is None


def test_exception_handler__request_data_too_big__413_native_body():
    # Given: what Django raises when request.body passes its limit
    from django.core.exceptions import RequestDataTooBig

    from controlplane.api.exception_handler import api_exception_handler

    # When
    response = api_exception_handler(RequestDataTooBig("too big"), {})
    # Then
    assert response.status_code == 413
    assert response.data["code"] == "payload_too_large"
    assert set(response.data) == {"code", "message", "errors"}


@pytest.mark.postgres
@pytest.mark.slow
def test_ten_mb_body__real_server__client_reads_the_413(kill_target, gunicorn_server):
    # Given: a client that sends the whole body before reading the answer
    body = b'{"key": "m-big", "name": "' + b"x" * 10_000_000 + b'"}'
    conn = http.client.HTTPConnection(*gunicorn_server, timeout=60)
    # When
    conn.request(
        "POST",
        "/api/v1/merchants",
        body=body,
        headers={
            "Authorization": f"Bearer {kill_target['key']}",
            "Content-Type": "application/json",
        },
    )
    response = conn.getresponse()
    # Then: the answer arrives (the rest of the body was drained, not reset)
    assert response.status == 413
    assert json.loads(response.read())["code"] == "payload_too_large"
    conn.close()
