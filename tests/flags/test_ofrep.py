"""OFREP endpoints: shapes and codes through the test client, and the official
OpenFeature SDK with its OFREP provider against a live server."""

from __future__ import annotations

import json

import pytest

from controlplane.audit.actors import SYSTEM
from tests.apikeys.fixtures import (  # noqa: F401
    auth,
    catalog,
    server_key,
    server_key_factory,
    serving_reset,
)

SINGLE = "/ofrep/v1/evaluate/flags/{}"
BULK = "/ofrep/v1/evaluate/flags"


def post(client, url, body, headers, content_type="application/json"):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type=content_type, **headers)


def test_ofrep_single__known_flag__value_variant_reason_metadata(
    client, catalog, auth, production
):
    # When
    response = post(
        client,
        SINGLE.format("checkout_layout"),
        {"context": {"targetingKey": "m-gold"}},
        auth,
    )
    # Then
    production.refresh_from_db()
    assert response.status_code == 200
    assert response.json() == {
        "key": "checkout_layout",
        "value": {"columns": 2, "sidebar": True},
        "reason": "TARGETING_MATCH",
        "variant": "v2",
        "metadata": {
            "level": "rule:1",
            "version": production.ruleset_version,
            "environment": "production",
            "stale": False,
        },
    }


def test_ofrep_single__unknown_flag__404_flag_not_found(client, catalog, auth):
    # When
    response = post(
        client, SINGLE.format("nope"), {"context": {"targetingKey": "m-1"}}, auth
    )
    # Then
    assert response.status_code == 404
    assert response.json()["key"] == "nope"
    assert response.json()["errorCode"] == "FLAG_NOT_FOUND"
    assert response.json()["errorDetails"]


def test_ofrep_single__split_without_targeting_key__400_targeting_key_missing(
    client, catalog, auth
):
    # When
    response = post(client, SINGLE.format("checkout_theme"), {"context": {}}, auth)
    # Then
    assert response.status_code == 400
    assert response.json()["errorCode"] == "TARGETING_KEY_MISSING"


@pytest.mark.parametrize(
    "body,status,code",
    [
        ("{oops", 400, "PARSE_ERROR"),
        ('"a string"', 400, "PARSE_ERROR"),
        ('{"context": []}', 400, "INVALID_CONTEXT"),
        ('{"context": {"targetingKey": 7}}', 400, "INVALID_CONTEXT"),
    ],
)
def test_ofrep_single__bad_input__400_with_error_code(
    client, catalog, auth, body, status, code
):
    # When
    response = post(client, SINGLE.format("checkout_theme"), body, auth)
    # Then
    assert response.status_code == status
    assert response.json() == {
        "key": "checkout_theme",
        "errorCode": code,
        "errorDetails": response.json()["errorDetails"],
    }


def test_ofrep_single__no_key__401(client, catalog):
    # When
    response = post(client, SINGLE.format("checkout_theme"), {"context": {}}, {})
    # Then
    assert response.status_code == 401
    assert "WWW-Authenticate" in response


def test_ofrep_bulk__all_flags__successes_and_etag(client, catalog, auth):
    # When
    response = post(client, BULK, {"context": {"targetingKey": "m-pilot"}}, auth)
    # Then
    assert response.status_code == 200
    assert response["ETag"]
    flags = {item["key"]: item for item in response.json()["flags"]}
    assert set(flags) == {
        "sequential_workflow",
        "policy_resolution_timeout_ms",
        "checkout_theme",
        "checkout_layout",
    }
    assert flags["sequential_workflow"]["value"] is True
    assert flags["sequential_workflow"]["variant"] == "on"


def test_ofrep_bulk__matching_if_none_match__304_until_a_change(
    client, catalog, auth, production
):
    # Given
    body = {"context": {"targetingKey": "m-pilot"}}
    etag = post(client, BULK, body, auth)["ETag"]
    # When
    unchanged = post(client, BULK, body, {**auth, "HTTP_IF_NONE_MATCH": etag})
    other_context = post(
        client,
        BULK,
        {"context": {"targetingKey": "m-2"}},
        {**auth, "HTTP_IF_NONE_MATCH": etag},
    )
    from flags import services
    from flags.snapshot import store

    services.flag_state_set_enabled(
        actor=SYSTEM, flag=catalog["workflow"], environment=production, enabled=False
    )
    store().check_versions()
    changed = post(client, BULK, body, {**auth, "HTTP_IF_NONE_MATCH": etag})
    # Then
    assert unchanged.status_code == 304
    assert other_context.status_code == 200
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_ofrep_bulk__non_object_context__400_without_key(client, catalog, auth):
    # When
    response = post(client, BULK, {"context": "x"}, auth)
    # Then
    assert response.status_code == 400
    assert response.json()["errorCode"] == "INVALID_CONTEXT"
    assert "key" not in response.json()


def test_ofrep_bulk__key_of_other_scope__403(client, catalog, django_user_model):
    # Given
    from controlplane.apikeys.services import apikey_create

    user = django_user_model.objects.create_user("svc")
    _, raw = apikey_create(actor=SYSTEM, name="ops", scope="management", user=user)
    # When
    response = post(
        client, BULK, {"context": {}}, {"HTTP_AUTHORIZATION": f"Bearer {raw}"}
    )
    # Then
    assert response.status_code == 403


# -- the official OpenFeature SDK + OFREP provider, and the three paths -----------


@pytest.fixture
def openfeature_client(live_server, catalog, server_key):
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider

    provider = OFREPProvider(
        live_server.url,
        headers_factory=lambda: {"Authorization": f"Bearer {server_key}"},
        timeout=5,
    )
    api.set_provider(provider, domain="tests-ofrep")
    yield api.get_client(domain="tests-ofrep")
    api.clear_providers()


@pytest.mark.slow
def test_openfeature_provider__each_type_and_missing_flag__resolved(openfeature_client):
    from openfeature.evaluation_context import EvaluationContext
    from openfeature.exception import ErrorCode
    from openfeature.flag_evaluation import Reason

    # Given
    gold = EvaluationContext(targeting_key="m-gold")
    pilot = EvaluationContext(targeting_key="m-pilot")
    # When
    workflow = openfeature_client.get_boolean_details(
        "sequential_workflow", False, pilot
    )
    timeout = openfeature_client.get_integer_details(
        "policy_resolution_timeout_ms", 1, gold
    )
    theme = openfeature_client.get_string_details("checkout_theme", "none", gold)
    layout = openfeature_client.get_object_details("checkout_layout", {}, gold)
    missing = openfeature_client.get_boolean_details("no_such_flag", True, gold)
    wrong_type = openfeature_client.get_boolean_details("checkout_theme", True, gold)
    # Then
    assert (workflow.value, workflow.variant, workflow.reason) == (
        True,
        "on",
        Reason.TARGETING_MATCH,
    )
    assert workflow.flag_metadata["level"] == "override"
    assert (timeout.value, timeout.reason, timeout.error_code) == (
        100,
        Reason.STATIC,
        None,
    )
    assert theme.value in ("dark", "classic") and theme.reason == Reason.SPLIT
    assert layout.value == {"columns": 2, "sidebar": True}
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    assert (wrong_type.value, wrong_type.error_code) == (True, ErrorCode.TYPE_MISMATCH)


@pytest.mark.slow
def test_three_paths__same_context__identical_answers(
    live_server, openfeature_client, client, server_key
):
    from openfeature.evaluation_context import EvaluationContext

    from flags.client import FlagsClient

    # Given
    local = FlagsClient(
        live_server.url, server_key, "production", start=True, timeout=5
    )
    merchants = ["m-gold", "m-pilot", "m-1", "m-2", "m-3", "m-4", "m-5"]
    getters = {
        "sequential_workflow": openfeature_client.get_boolean_details,
        "policy_resolution_timeout_ms": openfeature_client.get_integer_details,
        "checkout_theme": openfeature_client.get_string_details,
        "checkout_layout": openfeature_client.get_object_details,
    }
    try:
        for merchant in merchants:
            # When
            native = client.post(
                "/api/v1/evaluate",
                data=json.dumps({"context": {"merchant": merchant}}),
                content_type="application/json",
                HTTP_AUTHORIZATION=f"Bearer {server_key}",
            ).json()["flags"]
            for item in native:
                ofrep = getters[item["key"]](
                    item["key"], None, EvaluationContext(targeting_key=merchant)
                )
                answer = local.evaluate(item["key"], {"merchant": merchant})
                # Then
                assert (
                    ofrep.value,
                    ofrep.variant,
                    ofrep.reason.value,
                    ofrep.flag_metadata["level"],
                ) == (item["value"], item["variation"], item["reason"], item["level"])
                assert (
                    answer.value,
                    answer.variation,
                    answer.reason,
                    answer.level,
                ) == (item["value"], item["variation"], item["reason"], item["level"])
    finally:
        local.close()
