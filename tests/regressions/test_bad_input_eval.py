"""Bad input on the evaluation and events endpoints, through a real gunicorn.

The cases live in ``bad_input_eval.json`` (one per defect found, issue 8);
each is replayed against a serving process, so input that would still reach
mmh3 crashes a gunicorn worker and fails the case instead of the test run.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.regressions.conftest import ROOT, Server

pytestmark = pytest.mark.slow

CASES = json.loads((Path(__file__).parent / "bad_input_eval.json").read_text())["cases"]


def _body(case: dict[str, Any]) -> bytes:
    if "body_b64" in case:
        return base64.b64decode(case["body_b64"])
    if "body_parts" in case:
        return "".join(text * times for text, times in case["body_parts"]).encode()
    return case["body"].encode()


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} in an answer")


def strict_json(raw: bytes) -> Any:
    """Parse ``raw`` as RFC 8259 JSON: no NaN/Infinity, valid UTF-8."""
    return json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant)


def _auth(server: Server, headers: dict[str, str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.key}", **headers}


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_bad_input__replayed_on_gunicorn__4xx_field_error_nothing_written(
    gunicorn_server, case
):
    # Given
    rows_before = gunicorn_server.outcome_event_rows()
    log_start = gunicorn_server.log_size()
    # When
    status, headers, raw = gunicorn_server.request(
        "POST", case["endpoint"], _body(case), _auth(gunicorn_server, case["headers"])
    )
    # Then: a JSON 4xx of the endpoint's shape, naming the field
    assert gunicorn_server.crashed_workers(since=log_start) == []
    assert status == case["status"], raw[:500]
    assert headers["Content-Type"] == "application/json"
    body = strict_json(raw)
    if case["endpoint"].startswith("/ofrep/"):
        assert body["errorCode"] == case["code"]
        # OFREP bodies have no field map: a field error names it in the details
        if case.get("field", "body") != "body":
            assert case["field"] in body["errorDetails"]
    else:
        assert body["code"] == case["code"]
        assert body["message"]
        if "field" in case:
            assert case["field"] in body["errors"], body
        if "field_startswith" in case:
            assert [f for f in body["errors"] if f.startswith(case["field_startswith"])]
    assert gunicorn_server.outcome_event_rows() == rows_before


def test_bad_input__valid_requests_on_gunicorn__answered(gunicorn_server):
    # Given: the harness can tell good from bad
    rows_before = gunicorn_server.outcome_event_rows()
    good_event = {
        "flag": "sequential_workflow",
        "merchant": "m-é",
        "variation": "on",
        "outcome": "success",
    }
    # When
    native = gunicorn_server.request(
        "POST",
        "/api/v1/evaluate",
        json.dumps({"context": {"merchant": "m-é", "tier": "gold"}}).encode(),
        _auth(gunicorn_server, {"Content-Type": "application/json"}),
    )
    events = gunicorn_server.request(
        "POST",
        "/api/v1/events",
        json.dumps({"events": [good_event]}).encode(),
        _auth(gunicorn_server, {"Content-Type": "application/json"}),
    )
    # Then
    assert native[0] == 200, native[2]
    answers = {item["key"]: item for item in strict_json(native[2])["flags"]}
    assert answers["checkout_theme"]["variation"] == "dark"
    assert answers["sequential_workflow"]["reason"] == "SPLIT"
    assert events[0] == 202, events[2]
    assert gunicorn_server.outcome_event_rows() == rows_before + 1


# -- chunked bodies and oversized bodies ---------------------------------------


def _chunked_request(server: Server, path: str, chunks: list[bytes], end=True) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {server.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks]
    if end:
        framed.append(b"0\r\n\r\n")
    return server.raw(head, chunks=framed)


def _split(raw: bytes) -> tuple[int, bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        decoded = b""
        while body:
            size_line, _, rest = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                break
            decoded += rest[:size]
            body = rest[size + 2 :]
        body = decoded
    return status, body


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/v1/evaluate", {"context": {"merchant": "m-gold"}}),
        ("/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "m-gold"}}),
        (
            "/ofrep/v1/evaluate/flags/checkout_theme",
            {"context": {"targetingKey": "m-gold"}},
        ),
    ],
)
def test_evaluation__chunked_body_on_gunicorn__same_answer_as_with_length(
    gunicorn_server, path, body
):
    # Given
    headers = _auth(gunicorn_server, {"Content-Type": "application/json"})
    payload = json.dumps(body).encode()
    _, _, with_length = gunicorn_server.request("POST", path, payload, headers)
    _, _, empty = gunicorn_server.request("POST", path, b"{}", headers)
    # When: the same body in three chunks, no Content-Length
    thirds = [payload[:10], payload[10:20], payload[20:]]
    status, chunked = _split(_chunked_request(gunicorn_server, path, thirds))
    # Then: read, not taken for an empty body
    assert status == 200, chunked
    assert strict_json(chunked) == strict_json(with_length)
    assert strict_json(chunked) != strict_json(empty)


def test_events__chunked_body_on_gunicorn__stored(gunicorn_server):
    # Given
    rows_before = gunicorn_server.outcome_event_rows()
    event = {
        "flag": "sequential_workflow",
        "merchant": "m-chunked",
        "variation": "on",
        "outcome": "failure",
    }
    payload = json.dumps({"events": [event, event]}).encode()
    # When
    status, body = _split(
        _chunked_request(gunicorn_server, "/api/v1/events", [payload[:7], payload[7:]])
    )
    # Then
    assert status == 202, body
    assert strict_json(body) == {"accepted": 2}
    assert gunicorn_server.outcome_event_rows() == rows_before + 2


def test_evaluate__chunked_body_over_limit_never_ending__413_without_the_end(
    gunicorn_server,
):
    # Given: 80 KB of chunks over the 64 KB limit, and no final chunk: a
    # server waiting for the end of the body would never answer
    chunks = [b'{"context": {"pad": "'] + [b"x" * 8192] * 10
    # When
    status, body = _split(
        _chunked_request(gunicorn_server, "/api/v1/evaluate", chunks, end=False)
    )
    # Then
    assert status == 413
    assert strict_json(body)["code"] == "PAYLOAD_TOO_LARGE"
    assert "body" in strict_json(body)["errors"]


@pytest.mark.parametrize(
    "path, shape",
    [
        ("/api/v1/events", "native"),
        ("/api/v1/evaluate", "native"),
        ("/ofrep/v1/evaluate/flags", "ofrep"),
    ],
)
def test_ten_megabyte_body__declared_length__413_the_client_reads(
    gunicorn_server, path, shape
):
    # Given: a client that sends a 10 MB body whole before reading, as HTTP
    # clients do: the length is refused, the rest drained and never kept, so
    # the 413 reaches the client instead of a reset connection
    size = 10 * 1024 * 1024
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {gunicorn_server.key}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {size}\r\nConnection: close\r\n\r\n"
    ).encode()
    prefix = b'{"events": ['
    rest = b" " * (size - len(prefix))
    rows_before = gunicorn_server.outcome_event_rows()
    # When
    status, body = _split(
        gunicorn_server.raw(
            head + prefix,
            chunks=[rest[i : i + (1 << 20)] for i in range(0, len(rest), 1 << 20)],
        )
    )
    # Then
    assert status == 413
    answer = strict_json(body)
    if shape == "native":
        assert answer["code"].upper() == "PAYLOAD_TOO_LARGE"
        assert answer["errors"]["body"]
    else:
        assert answer["errorCode"] == "GENERAL"
        assert answer["errorDetails"]
    assert gunicorn_server.outcome_event_rows() == rows_before


def test_events__chunked_ten_megabytes__413_after_the_limit(gunicorn_server):
    # Given: 3 MB of chunks (over the 2.5 MB events limit) and no final chunk
    chunks = [b'{"events": ['] + [b" " * 65536] * 48
    rows_before = gunicorn_server.outcome_event_rows()
    # When
    status, body = _split(
        _chunked_request(gunicorn_server, "/api/v1/events", chunks, end=False)
    )
    # Then
    assert status == 413
    assert strict_json(body)["code"] == "payload_too_large"
    assert gunicorn_server.outcome_event_rows() == rows_before


# -- the Python client (local evaluation) ----------------------------------------

CLIENT = r"""
import json, sys
from flags.client import FlagsClient
url, key = sys.argv[1], sys.argv[2]
bad = "\ud800"
with FlagsClient(url, key, "production", poll_interval=60) as client:
    calls = [
        ("sequential_workflow", {"merchant": "m-" + bad}),
        ("checkout_theme", {"merchant": "m-1", "tier": bad}),
        ("checkout_theme", {"merchant": "m-1", "plan": ["pro", bad]}),
        ("checkout_theme", {"merchant": bad, "plan": "pro"}),
        ("by_account", {"merchant": "m-1", "account": "a" + bad}),
        ("sequential_workflow", {"merchant": "m-é"}),
    ]
    out = []
    for flag, context in calls:
        answer = client.evaluate(flag, context, "fallback")
        out.append([answer.value, answer.reason, answer.error_code])
print(json.dumps(out))
"""


def test_client__lone_surrogate_in_context__error_answer_no_crash(gunicorn_server):
    # When: local evaluation in its own process (a crash must not be ours)
    done = subprocess.run(
        [sys.executable, "-c", CLIENT, gunicorn_server.url, gunicorn_server.key],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    answers = json.loads(done.stdout)
    assert answers[:5] == [["fallback", "ERROR", "INVALID_CONTEXT"]] * 5
    assert answers[5][1] == "SPLIT"
