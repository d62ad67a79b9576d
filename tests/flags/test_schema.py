"""The OpenAPI schema: served, valid, warning-free, and fuzzed for 5xx.

schemathesis generates requests from the schema and sends them through the
Django WSGI app (no network), logged in as a superuser with a session cookie
and CSRF token, against seeded rows so that examples with known keys reach
the handlers. Bounded: few examples per operation, derandomized, no deadline.
"""

from __future__ import annotations

import time

import pytest
import schemathesis
from django.contrib.auth.models import User
from django.core import signals
from django.core.management import call_command
from django.db import close_old_connections
from django.test import Client
from django.urls import include, path
from drf_spectacular.drainage import GENERATOR_STATS
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from controlplane.audit.actors import SYSTEM
from flags import services

# Examples per operation and generation mode, and the wall-clock budget: the
# management operations always run in full; the others run while it lasts.
FUZZ_BUDGET_SECONDS = 40.0
FUZZ_EXAMPLES = 4
# The management API's own routes run first, then every other operation
# (evaluation, canary, rollback) while the budget lasts.
MANAGEMENT = tuple(
    f"/api/v1/{prefix}"
    for prefix in (
        "environments",
        "merchants",
        "segments",
        "flags",
        "api-keys",
        "audit-events",
    )
)


def test_schema_endpoint__json__valid_openapi_3(db):
    # Given
    client = Client()
    # When
    response = client.get("/api/schema/", {"format": "json"})
    # Then
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # raises on an invalid document
    paths = schema["paths"]
    for expected in [
        "/api/v1/flags/{key}/environments/{env}",
        "/api/v1/merchants/bulk-upsert",
        "/api/v1/audit-events",
        "/api/v1/api-keys",
        "/api/v1/flags/{key}/environments/{env}/kill",
    ]:
        assert expected in paths, expected


def test_schema_docs_pages__swagger_and_redoc__served(db):
    # When
    swagger = Client().get("/api/docs/")
    redoc = Client().get("/api/redoc/")
    # Then
    assert swagger.status_code == 200 and b"swagger" in swagger.content.lower()
    assert redoc.status_code == 200 and b"redoc" in redoc.content.lower()


def test_management_schema__generated__no_warnings_or_errors(db):
    # Given: only the management API's routes (other apps' views are theirs)
    GENERATOR_STATS.reset()
    generator = SchemaGenerator(patterns=[path("api/v1/", include("flags.api.urls"))])
    # When
    schema = generator.get_schema(request=None, public=True)
    # Then
    validate_schema(schema)
    assert (GENERATOR_STATS._warn_cache, GENERATOR_STATS._error_cache) == ({}, {})
    assert len(schema["paths"]) >= 20


def test_spectacular_command__whole_project__valid_and_warning_free(db, tmp_path):
    # When: every app's routes; --fail-on-warn raises on any warning or error
    call_command(
        "spectacular",
        "--validate",
        "--fail-on-warn",
        "--file",
        str(tmp_path / "schema.yaml"),
    )
    # Then
    text = (tmp_path / "schema.yaml").read_text()
    assert text.startswith("openapi: 3")
    for route in (
        "/api/v1/events:",
        "/api/v1/deployments:",
        "/api/v1/rollback-runs:",
        "/api/v1/rollouts:",
        "/ofrep/v1/evaluate/flags:",
    ):
        assert route in text


# -- schemathesis ---------------------------------------------------------------


@pytest.fixture
def seeded(db):
    """Rows whose keys match the schema's path examples."""
    production = services.environment_create(actor=SYSTEM, key="production")
    services.flag_create(
        actor=SYSTEM,
        key="checkout_theme",
        value_type="string",
        variations=[
            {"key": "classic", "value": "classic"},
            {"key": "dark", "value": "dark"},
        ],
    )
    services.flag_create(actor=SYSTEM, key="sequential_workflow")
    merchant = services.merchant_create(
        actor=SYSTEM, key="m-1", attributes={"tier": "gold"}
    )
    services.segment_create(
        actor=SYSTEM,
        key="gold",
        clauses=[{"attribute": "tier", "op": "in", "values": ["gold"]}],
    )
    flag = services.flag_create(actor=SYSTEM, key="pilot_flag")
    services.override_set(
        actor=SYSTEM,
        flag=flag,
        environment=production,
        merchant=merchant,
        variation="on",
    )


@pytest.fixture
def keep_test_connection():
    """Stop Django closing the test's connection around raw WSGI requests.

    The test client does the same; without it the request signals would
    close the connection that holds the test transaction (PostgreSQL).
    """
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture
def session(seeded, keep_test_connection) -> dict[str, dict[str, str]]:
    """Cookies and header of a logged-in superuser (session + CSRF)."""
    client = Client()
    client.force_login(User.objects.create_superuser("fuzz", password="x"))
    token = "A" * 32  # the CSRF cookie and header only have to match
    return {
        "cookies": {"sessionid": client.cookies["sessionid"].value, "csrftoken": token},
        "headers": {"X-CSRFToken": token},
    }


# Fixed path parameters that reach seeded rows (besides random ones).
KNOWN = {"env": "production", "merchant": "m-1", "id": "1"}
KNOWN_KEY = {"/api/v1/segments/": "gold", "/api/v1/flags/": "checkout_theme"}


def _known_path_parameters(operation) -> dict[str, str]:
    names = {parameter.name for parameter in operation.path_parameters}
    fixed = {name: value for name, value in KNOWN.items() if name in names}
    key = next(
        (v for prefix, v in KNOWN_KEY.items() if operation.path.startswith(prefix)),
        None,
    )
    if "key" in names and key is not None:
        fixed["key"] = key
    return fixed


def _fuzz(operation, strategy, auth, failures, deadline) -> None:
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=strategy)
    def run(case) -> None:
        if time.monotonic() > deadline:
            return
        response = case.call(**auth)
        if response.status_code >= 500:
            failures.append(
                f"{operation.label}: {response.status_code} for "
                f"{case.as_curl_command()}"
            )

    try:
        run()
    except Unsatisfiable:
        pass  # nothing to make invalid (e.g. a negative case of a bare GET)


def test_api__schemathesis_cases__never_5xx(session):
    # Given
    from controlplane.wsgi import application

    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda operation: not operation.path.startswith(MANAGEMENT),
    )
    fuzzed: set[str] = set()
    deadline = time.monotonic() + FUZZ_BUDGET_SECONDS
    failures: list[str] = []
    # When
    for operation in operations:
        is_management = operation.path.startswith(MANAGEMENT)
        if not is_management and time.monotonic() > deadline:
            break  # the budget bounds only the other apps' operations
        known = _known_path_parameters(operation) or None
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, path_parameters=known)
            _fuzz(
                operation,
                strategy,
                session,
                failures,
                float("inf") if is_management else deadline,
            )
        fuzzed.add(operation.label)
    # Then
    management = {op.label for op in operations if op.path.startswith(MANAGEMENT)}
    assert len(management) >= 30
    assert management <= fuzzed
    assert failures == []
