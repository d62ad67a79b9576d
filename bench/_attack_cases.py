"""The hostile requests bench/attack_replay.py sends (issue "Hardening").

Each case is one HTTP request; ``key`` names which of the replay's keys
sends it (server, admin, canary, sqlcanary or none).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

SURROGATE = '"\\ud800"'  # a JSON escape that decodes to a lone surrogate
DEEP = "[" * 5000 + "]" * 5000


@dataclass
class Case:
    name: str
    method: str
    path: str
    body: bytes | None = None
    key: str = "server"  # server | admin | canary | none
    content_type: str = "application/json"
    chunked: bool = False
    # bytes that must not appear in the answer (e.g. a flag the body did not
    # ask for: the body was ignored)
    absent: bytes = b""


def cases() -> list[Case]:
    ctx = '{"context": {"targetingKey": %s}}'
    native = '{"context": {"merchant": %s}, "flags": ["f-attack"]}'
    ten_mb = b'{"events": [' + b'{"a": 1},' * 1_100_000 + b'{"a": 1}]}'
    big = b'{"x": "' + b"a" * 10_000_000 + b'"}'
    plain = [
        # evaluation: lone surrogates, nesting, non-finite numbers
        Case("native merchant \\ud800", "POST", "/api/v1/evaluate", native % SURROGATE),
        Case(
            "native flags[] \\ud800",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1"}, "flags": [%s]}' % SURROGATE,
        ),
        Case("native nested 5000", "POST", "/api/v1/evaluate", DEEP),
        Case(
            "native context nested 5000",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1", "a": %s}}' % DEEP,
        ),
        Case(
            "ofrep single targetingKey \\ud800",
            "POST",
            "/ofrep/v1/evaluate/flags/f-attack",
            ctx % SURROGATE,
        ),
        Case(
            "ofrep bulk targetingKey \\ud800",
            "POST",
            "/ofrep/v1/evaluate/flags",
            ctx % SURROGATE,
        ),
        Case(
            "ofrep single attribute \\ud800",
            "POST",
            "/ofrep/v1/evaluate/flags/f-attack",
            '{"context": {"targetingKey": "m-1", "tier": %s}}' % SURROGATE,
        ),
        Case("ofrep bulk nested 5000", "POST", "/ofrep/v1/evaluate/flags", DEEP),
        Case(
            "native default 1e999",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1"}, "flags": ["f-attack"], "default": 1e999}',
        ),
        Case(
            "native default \\ud800",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1"}, "flags": ["f-attack"], "default": %s}'
            % SURROGATE,
        ),
        Case(
            "native regex ^(a+)+$ x28",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1", "code": "%s!"}, "flags": ["f-regex"]}'
            % ("a" * 28),
        ),
        Case(
            "native chunked body",
            "POST",
            "/api/v1/evaluate",
            '{"context": {"merchant": "m-1"}, "flags": ["f-regex"]}',
            chunked=True,
            absent=b"f-attack",
        ),
        # events
        Case(
            "events merchant \\ud800",
            "POST",
            "/api/v1/events",
            '{"events": [{"flag": "f-attack", "merchant": %s, "variation": "on",'
            ' "outcome": "success"}]}' % SURROGATE,
        ),
        Case(
            "events outcome {}",
            "POST",
            "/api/v1/events",
            '{"events": [{"flag": "f-attack", "merchant": "m-1", "variation": "on",'
            ' "outcome": {}}]}',
        ),
        Case(
            "events outcome []",
            "POST",
            "/api/v1/events",
            '{"events": [{"flag": "f-attack", "merchant": "m-1", "variation": "on",'
            ' "outcome": []}]}',
        ),
        Case("events nested 5000", "POST", "/api/v1/events", DEEP),
        Case("events 10 MB", "POST", "/api/v1/events", ten_mb),
        Case(
            "events chunked",
            "POST",
            "/api/v1/events",
            '{"events": []}',
            chunked=True,
        ),
        # management API
        Case(
            "merchant attributes \\ud800",
            "POST",
            "/api/v1/merchants",
            '{"key": "m-evil", "attributes": {"tier": %s}}' % SURROGATE,
            key="admin",
        ),
        Case(
            "merchant key NUL",
            "POST",
            "/api/v1/merchants",
            '{"key": "m-\\u0000", "attributes": {}}',
            key="admin",
        ),
        Case(
            "bulk upsert \\ud800",
            "POST",
            "/api/v1/merchants/bulk-upsert",
            '{"merchants": [{"key": %s}]}' % SURROGATE,
            key="admin",
        ),
        Case(
            "segment clause \\ud800",
            "POST",
            "/api/v1/segments",
            '{"key": "s-evil", "name": "evil", "clauses": [{"attribute": "tier",'
            ' "op": "in", "values": [%s]}]}' % SURROGATE,
            key="admin",
        ),
        Case("management nested 5000", "POST", "/api/v1/merchants", DEEP, key="admin"),
        Case(
            "management form-encoded",
            "POST",
            "/api/v1/merchants",
            "key=m-form",
            key="admin",
            content_type="application/x-www-form-urlencoded",
        ),
        Case("management 10 MB", "POST", "/api/v1/merchants", big, key="admin"),
        Case(
            "management chunked",
            "POST",
            "/api/v1/merchants",
            '{"key": "m-chunked"}',
            key="admin",
            chunked=True,
        ),
        Case(
            "flag state regex ^(a+)+$ (",
            "POST",
            "/api/v1/segments",
            '{"key": "s-badre", "name": "bad", "clauses": [{"attribute": "code",'
            ' "op": "matches", "values": ["(a+"]}]}',
            key="admin",
        ),
        # NUL in query parameters
        Case(
            "deployments environment %00",
            "GET",
            "/api/v1/deployments?environment=a%00b",
            key="admin",
        ),
        Case("rollouts flag %00", "GET", "/api/v1/rollouts?flag=a%00b", key="admin"),
        Case(
            "rollouts environment %00",
            "GET",
            "/api/v1/rollouts?environment=a%00b",
            key="admin",
        ),
        Case("audit actor %00", "GET", "/api/v1/audit-events?actor=a%00b", key="admin"),
        Case(
            "merchants search %00", "GET", "/api/v1/merchants?search=a%00b", key="admin"
        ),
    ]
    for case in plain:
        if isinstance(case.body, str):
            case.body = case.body.encode()
    return plain


def sql_check_cases() -> list[Case]:
    """A canary-only key tries to read the session table through a SQL check."""
    queries = [
        "SELECT session_key FROM django_session LIMIT 1",
        "SELECT CAST(session_key AS integer) FROM django_session LIMIT 1",
        "SELECT password FROM auth_user LIMIT 1",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_sleep(100)",
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity LIMIT 1",
    ]
    out = []
    # without and with canary.manage_sql_checks: refused either way
    for index, (query, key) in enumerate(
        [(q, "canary") for q in queries] + [(q, "sqlcanary") for q in queries]
    ):
        body = {
            "flag": "f-attack",
            "environment": "production",
            "name": f"sql-{index}",
            "template": "demo-fast",
            "pilot_merchants": ["m-1"],
            "checks": [
                {
                    "name": "leak",
                    "provider": "sql",
                    "spec": {"query": query},
                    "threshold": 1,
                    "timeout": 100,
                }
            ],
        }
        out.append(
            Case(
                f"sql check ({key}): {query[:30]}",
                "POST",
                "/api/v1/rollouts",
                json.dumps(body).encode(),
                key=key,
            )
        )
    return out
