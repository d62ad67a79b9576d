"""Native evaluation API and the ruleset endpoint, through Django's test client."""

from __future__ import annotations

import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from controlplane.audit.actors import SYSTEM
from flags import engine, services
from flags.snapshot import store
from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

URL = "/api/v1/evaluate"


def post(client, body, auth_headers, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        URL,
        data=data,
        content_type=extra.pop("content_type", "application/json"),
        **auth_headers,
        **extra,
    )


def test_evaluate__all_flags__every_answer_with_reason_level_and_version(
    client, catalog, auth, production
):
    # Given
    production.refresh_from_db()
    # When
    response = post(client, {"context": {"merchant": "m-gold"}}, auth)
    # Then
    assert response.status_code == 200
    body = response.json()
    assert body["environment"] == "production"
    assert body["version"] == production.ruleset_version
    assert body["stale"] is False
    answers = {item["key"]: item for item in body["flags"]}
    assert answers["checkout_layout"] == {
        "key": "checkout_layout",
        "value": {"columns": 2, "sidebar": True},
        "variation": "v2",
        "reason": "TARGETING_MATCH",
        "level": "rule:1",
    }
    assert answers["policy_resolution_timeout_ms"]["value"] == 100
    assert answers["policy_resolution_timeout_ms"]["reason"] == "STATIC"
    assert answers["checkout_theme"]["reason"] == "SPLIT"
    assert answers["sequential_workflow"]["value"] is False


def test_evaluate__pilot_override__targeting_match_override_level(
    client, catalog, auth
):
    # When
    response = post(
        client,
        {"context": {"merchant": "m-pilot"}, "flags": ["sequential_workflow"]},
        auth,
    )
    # Then
    assert response.json()["flags"] == [
        {
            "key": "sequential_workflow",
            "value": True,
            "variation": "on",
            "reason": "TARGETING_MATCH",
            "level": "override",
        }
    ]


def test_evaluate__request_attribute__overrides_registry_attribute(
    client, catalog, auth
):
    # When: the registry says gold, the request says silver
    response = post(
        client,
        {
            "context": {"merchant": "m-gold", "tier": "silver"},
            "flags": ["checkout_layout"],
        },
        auth,
    )
    # Then
    assert response.json()["flags"][0]["variation"] == "v1"


def test_evaluate__warm_cache__zero_queries(client, catalog, auth, settings):
    # Given: no version check due during the measured request
    settings.CONTROLPLANE = {
        **settings.CONTROLPLANE,
        "RULESET_POLL_INTERVAL": 3600,
        "RULESET_STALE_AFTER": 3600,
        "APIKEY_CACHE_TTL": 3600,
    }
    post(client, {"context": {"merchant": "m-gold"}}, auth)
    # When
    with CaptureQueriesContext(connection) as queries:
        response = post(client, {"context": {"merchant": "m-gold"}}, auth)
    # Then
    assert response.status_code == 200
    assert len(queries) == 0, [q["sql"] for q in queries]


def test_evaluate__flag_changed__next_check_serves_new_version(
    client, catalog, auth, production
):
    # Given
    first = post(
        client, {"context": {"merchant": "m-1"}, "flags": ["sequential_workflow"]}, auth
    )
    # When
    services.flag_state_set_percentage(
        actor=SYSTEM, flag=catalog["workflow"], environment=production, percentage=100
    )
    store().check_versions()
    second = post(
        client, {"context": {"merchant": "m-1"}, "flags": ["sequential_workflow"]}, auth
    )
    # Then
    assert first.json()["flags"][0]["value"] is False
    assert second.json()["flags"][0]["value"] is True
    assert second.json()["version"] > first.json()["version"]


def test_evaluate__typed_request_of_other_type__400_type_mismatch(
    client, catalog, auth
):
    # When
    response = post(
        client,
        {
            "context": {"merchant": "m-1"},
            "flags": [{"key": "checkout_theme", "type": "bool", "default": False}],
        },
        auth,
    )
    # Then
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "TYPE_MISMATCH"
    assert body["flags"][0]["value"] is False
    assert body["flags"][0]["error_code"] == "TYPE_MISMATCH"


def test_evaluate__only_unknown_flag__404_flag_not_found(client, catalog, auth):
    # When
    response = post(client, {"context": {"merchant": "m-1"}, "flags": ["nope"]}, auth)
    # Then
    assert response.status_code == 404
    assert response.json()["code"] == "FLAG_NOT_FOUND"


def test_evaluate__known_and_unknown_flag__200_with_inline_error(client, catalog, auth):
    # When
    response = post(
        client,
        {"context": {"merchant": "m-1"}, "flags": ["nope", "checkout_theme"]},
        auth,
    )
    # Then
    assert response.status_code == 200
    first, second = response.json()["flags"]
    assert (first["reason"], first["error_code"]) == ("ERROR", "FLAG_NOT_FOUND")
    assert "error_code" not in second


@pytest.mark.parametrize(
    "body,content_type,status,code",
    [
        ("{not json", "application/json", 400, "PARSE_ERROR"),
        ("[1, 2]", "application/json", 400, "PARSE_ERROR"),
        ('{"context": "m-1"}', "application/json", 400, "INVALID_CONTEXT"),
        ('{"context": {"merchant": 42}}', "application/json", 400, "INVALID_CONTEXT"),
        ('{"context": {}, "flags": "x"}', "application/json", 400, "INVALID_REQUEST"),
        (
            '{"context": {}, "flags": [{"key": "x", "type": "date"}]}',
            "application/json",
            400,
            "INVALID_REQUEST",
        ),
        (
            "context=1",
            "application/x-www-form-urlencoded",
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            '{"context": {"pad": "' + "x" * 70_000 + '"}}',
            "application/json",
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ],
)
def test_evaluate__bad_input__4xx_with_code(
    client, catalog, auth, body, content_type, status, code, caplog
):
    # When
    response = post(client, body, auth, content_type=content_type)
    # Then
    assert response.status_code == status
    assert response.json()["code"] == code
    assert response.json()["message"]
    assert not [r for r in caplog.records if r.levelname in ("ERROR", "CRITICAL")]


def test_evaluate__get__405(client, auth, catalog):
    # When
    response = client.get(URL, **auth)
    # Then
    assert response.status_code == 405


@pytest.mark.parametrize(
    "header", [None, "Bearer cp_srv_wrong", "Basic abc", "Bearer "]
)
def test_evaluate__missing_or_wrong_key__401_with_www_authenticate(
    client, catalog, header
):
    # Given
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    # When
    response = post(client, {"context": {}}, extra)
    # Then
    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "unauthorized"


def test_evaluate__revoked_key__401(client, catalog, production, serving_reset):
    # Given
    from controlplane.apikeys.services import apikey_create, apikey_revoke

    api_key, raw = apikey_create(
        actor=SYSTEM, name="old", scope="server", environment=production
    )
    headers = {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    assert post(client, {"context": {}}, headers).status_code == 200
    # When
    apikey_revoke(actor=SYSTEM, api_key=api_key)
    from controlplane.apikeys.cache import key_cache

    key_cache.revalidate()
    response = post(client, {"context": {}}, headers)
    # Then
    assert response.status_code == 401


def test_evaluate__management_key__403(
    client, catalog, django_user_model, serving_reset
):
    # Given
    from controlplane.apikeys.services import apikey_create

    user = django_user_model.objects.create_user("svc")
    _, raw = apikey_create(actor=SYSTEM, name="ops", scope="management", user=user)
    # When
    response = post(client, {"context": {}}, {"HTTP_AUTHORIZATION": f"Bearer {raw}"})
    # Then
    assert response.status_code == 403


# -- ruleset endpoint ------------------------------------------------------------


def test_ruleset__server_key_of_env__plain_data_with_etag(
    client, catalog, auth, production
):
    # When
    response = client.get("/api/v1/environments/production/ruleset", **auth)
    # Then
    production.refresh_from_db()
    assert response.status_code == 200
    assert response["ETag"] == f'"{production.ruleset_version}"'
    ruleset = engine.compile_ruleset(response.json())
    assert ruleset.version == production.ruleset_version
    assert (
        engine.evaluate(ruleset, "checkout_layout", {"merchant": "m-gold"}).variation
        == "v2"
    )


def test_ruleset__matching_if_none_match__304(client, catalog, auth):
    # Given
    etag = client.get("/api/v1/environments/production/ruleset", **auth)["ETag"]
    # When
    response = client.get(
        "/api/v1/environments/production/ruleset", HTTP_IF_NONE_MATCH=etag, **auth
    )
    # Then
    assert response.status_code == 304
    assert response["ETag"] == etag


def test_ruleset__key_of_other_environment__403(
    client, catalog, environments, server_key_factory
):
    # Given
    raw = server_key_factory(environments["staging"])
    # When
    response = client.get(
        "/api/v1/environments/production/ruleset", HTTP_AUTHORIZATION=f"Bearer {raw}"
    )
    # Then
    assert response.status_code == 403


def test_ruleset__no_key__401(client, catalog):
    # When
    response = client.get("/api/v1/environments/production/ruleset")
    # Then
    assert response.status_code == 401


def test_metrics__after_evaluations__counter_exposed(client, catalog, auth):
    # Given
    post(
        client,
        {"context": {"merchant": "m-pilot"}, "flags": ["sequential_workflow"]},
        auth,
    )
    # When
    text = client.get("/metrics").content.decode()
    # Then
    assert (
        'controlplane_flags_evaluations_total{flag="sequential_workflow",'
        'level="override",reason="TARGETING_MATCH",variation="on"}'
    ) in text
    assert "controlplane_flags_evaluation_seconds_count" in text
