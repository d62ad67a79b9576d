"""Lists stay paginated with a constant number of queries (issue 10, item 5).

Each admin changelist and API list is requested over 2 rows and over 50
rows: the query counts must be equal (no query per row), and the page holds
at most its page size. The admin asks no second whole-table count.
"""

from __future__ import annotations

import pytest
from django.contrib import admin
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controlplane.audit.actors import SYSTEM
from controlplane.audit.models import AuditEvent
from controlplane.paginator import EstimatedCountPaginator
from flags import services
from flags.models import Environment, Flag, FlagState, Merchant, MerchantOverride


@pytest.fixture
def flag_with_override(production, flag_factory):
    return flag_factory("listed-flag")


def _grow(count: int, production: Environment, flag: Flag) -> None:
    """Add merchants, flags (with states), overrides and audit events."""
    for index in range(count):
        merchant = services.merchant_create(
            actor=SYSTEM, key=f"m-list-{count}-{index}", attributes={"tier": "gold"}
        )
        services.override_set(
            actor=SYSTEM,
            flag=flag,
            environment=production,
            merchant=merchant,
            variation="on",
        )
        services.flag_create(
            actor=SYSTEM, key=f"f-list-{count}-{index}", name="f", tags=["t"]
        )


def _queries(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(captured.captured_queries)


def _admin_url(model: type) -> str:
    opts = model._meta
    return reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")


ADMIN_MODELS = [Merchant, Flag, FlagState, MerchantOverride, AuditEvent]
API_LISTS = [
    "/api/v1/merchants",
    "/api/v1/flags",
    "/api/v1/flags/listed-flag/environments/production/overrides",
    "/api/v1/audit-events",
]


@pytest.mark.parametrize("model", ADMIN_MODELS, ids=lambda m: m.__name__)
def test_admin_changelist__2_vs_50_rows__same_query_count(
    admin_client, production, flag_with_override, model
):
    # Given
    _grow(2, production, flag_with_override)
    _queries(admin_client, _admin_url(model))  # warm: caches filled once per visit
    small = _queries(admin_client, _admin_url(model))
    # When
    _grow(48, production, flag_with_override)
    large = _queries(admin_client, _admin_url(model))
    # Then
    # not more queries with more rows (the audit list links each target
    # type's rows with one query, so a page with fewer types runs fewer)
    assert large <= small


@pytest.mark.parametrize("url", API_LISTS)
def test_api_list__2_vs_50_rows__same_query_count(
    admin_client, production, flag_with_override, url
):
    # Given
    _grow(2, production, flag_with_override)
    small = _queries(admin_client, url)
    # When
    _grow(48, production, flag_with_override)
    large = _queries(admin_client, url)
    # Then
    assert large == small
    assert len(admin_client.get(url + "?limit=10").json()["results"]) == 10


@pytest.mark.parametrize(
    "model", [Merchant, Flag, FlagState, MerchantOverride], ids=lambda m: m.__name__
)
def test_flags_admin__changelist__no_full_count_estimated_paginator(model):
    # Given / When
    model_admin = admin.site._registry[model]
    # Then
    assert model_admin.show_full_result_count is False
    assert model_admin.paginator is EstimatedCountPaginator


def test_estimated_paginator__filtered_or_small__exact_count(production):
    # Given
    for index in range(3):
        services.merchant_create(actor=SYSTEM, key=f"m-count-{index}")
    # When
    whole = EstimatedCountPaginator(Merchant.objects.order_by("key"), 2)
    filtered = EstimatedCountPaginator(
        Merchant.objects.filter(key="m-count-1").order_by("key"), 2
    )
    # Then: a small table is counted, whatever the statistics say
    assert whole.count == 3
    assert filtered.count == 1
