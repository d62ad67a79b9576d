"""Replay tests/regressions/bad_input_management.json against the real database.

Each case is a request that once answered 500 (or ran without its body):
JSON nested 5,000 deep, lone surrogates and NUL in stored JSON, ``%00`` and
undecodable query text, chunked and form bodies, a 10 MB body, and the same
through the admin's forms and changelists. Each must now be a 4xx naming the
field, and write nothing (no audit event, no row).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from django.apps import apps
from django.contrib.auth.models import User
from django.test import Client

from canary import services as canary_services
from controlplane.apikeys.services import apikey_create
from controlplane.audit.actors import SYSTEM
from flags import services
from flags.models import FlagState

CASES_FILE = Path(__file__).with_name("bad_input_management.json")
CASES: list[dict[str, Any]] = json.loads(CASES_FILE.read_text())["cases"]
DEEP = "[" * 5000 + "]" * 5000
APPS = ("flags", "canary", "rollback", "audit", "apikeys")


@pytest.fixture
def seeded(db) -> dict[str, Any]:
    """Rows the cases address: flag, merchant, segment, a draft rollout."""
    production = services.environment_create(actor=SYSTEM, key="production")
    flag = services.flag_create(actor=SYSTEM, key="sequential_workflow")
    services.merchant_create(actor=SYSTEM, key="m-1", attributes={"tier": "gold"})
    services.segment_create(
        actor=SYSTEM,
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    rollout = canary_services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        name="regression rollout",
        phases=[{"name": "10%", "target_type": "percentage", "percentage": 10}],
        checks=[
            {
                "name": "error_rate",
                "provider": "outcomes",
                "spec": {"metric": "error_rate"},
                "threshold": 0.05,
            }
        ],
    )
    admin = User.objects.create_superuser("regression-admin", password="x")
    _, raw_key = apikey_create(
        actor=SYSTEM, name="regression", scope="management", user=admin
    )
    state = FlagState.objects.get(flag=flag, environment=production)
    return {
        "admin": admin,
        "management_key": raw_key,
        "ids": {
            "rollout": rollout.pk,
            "check": rollout.checks.get().pk,
            "state": state.pk,
        },
    }


def _expand(text: str) -> str:
    return text.replace("{{DEEP}}", DEEP).replace("{{PAD10MB}}", "x" * 10_000_000)


def _row_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for label in APPS
        for model in apps.get_app_config(label).get_models()
    }


def _send(case: dict[str, Any], seeded: dict[str, Any]) -> Any:
    client = Client(raise_request_exception=False)
    extra: dict[str, str] = {}
    if case["auth"] == "admin":
        client.force_login(seeded["admin"])
    else:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {seeded['management_key']}"
    path = case["path"].format(**seeded["ids"])
    headers = dict(case.get("headers") or {})
    content_type = headers.pop("Content-Type", None)
    extra.update({f"HTTP_{k.upper().replace('-', '_')}": v for k, v in headers.items()})
    extra.update(case.get("environ") or {})
    if "form" in case:
        form = {name: _expand(value) for name, value in case["form"].items()}
        return client.post(path, form, **extra)
    body = _expand(case["body"]) if case.get("body") is not None else ""
    kwargs: dict[str, Any] = {"data": body.encode("utf-8")}
    if content_type:
        kwargs["content_type"] = content_type
    return client.generic(case["method"], path, **kwargs, **extra)


@pytest.mark.parametrize("case", CASES, ids=[case["id"] for case in CASES])
def test_bad_input_case__replayed__4xx_naming_the_field_and_nothing_written(
    case, seeded
):
    # Given
    before = _row_counts()
    # When
    response = _send(case, seeded)
    # Then
    assert response.status_code == case["status"], response.content[:500]
    if "code" in case:
        body = response.json()
        assert body["code"] == case["code"]
        assert set(body) >= {"code", "message", "errors"}
        if "error_field" in case:
            assert case["error_field"] in body["errors"], body
        if "error_field_prefix" in case:
            fields = list(body["errors"])
            assert any(f.startswith(case["error_field_prefix"]) for f in fields), body
    if "form_error" in case:
        context = response.context
        form = context["adminform"].form if "adminform" in context else context["form"]
        assert case["form_error"] in form.errors, form.errors
    if "body_contains" in case:
        assert case["body_contains"] in response.content.decode()
    assert _row_counts() == before


def test_bad_input_cases__file__covers_every_reported_kind():
    # Given
    kinds = {case["why"].split(":")[0] for case in CASES}
    deep = {case["path"] for case in CASES if case["id"].startswith("deep json")}
    # Then: the kinds the report named, and deep JSON on every JSON endpoint
    assert len(CASES) >= 80 and len(kinds) >= 8
    assert {"/api/v1/merchants/bulk-upsert", "/api/v1/rollouts"} <= deep
