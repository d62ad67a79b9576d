"""The sql provider on the real test database."""

from __future__ import annotations

import time

import pytest
from django.db import connection

from canary.providers import ProviderError, get_provider
from controlplane.exceptions import InvalidInput
from flags.models import Environment


def test_sql_measure__scalar__value(environments, ctx):
    # When
    measurement = get_provider("sql").measure(
        {"query": "SELECT COUNT(*) FROM flags_environment"}, ctx, timeout=5
    )
    # Then
    assert measurement.value == 2.0
    assert measurement.detail["database"] == "default"
    assert measurement.detail["rows"] == 1


@pytest.mark.parametrize(
    "query",
    [
        "SELECT id FROM flags_environment WHERE key = 'nowhere'",
        "SELECT MAX(id) FROM flags_environment WHERE key = 'nowhere'",
    ],
)
def test_sql_measure__no_row_or_null__no_data(environments, ctx, query):
    # When
    measurement = get_provider("sql").measure({"query": query}, ctx, timeout=5)
    # Then
    assert measurement.value is None


def test_sql_measure__after_measure__caller_transaction_still_writable(
    environments, ctx
):
    # Given
    get_provider("sql").measure({"query": "SELECT 1"}, ctx, timeout=5)
    # When: the test's own transaction writes after the read-only savepoint
    Environment.objects.filter(key="staging").update(name="Still writable")
    # Then
    assert Environment.objects.get(key="staging").name == "Still writable"


@pytest.mark.parametrize(
    "query",
    [
        "UPDATE flags_environment SET name = 'x'",
        "DELETE FROM flags_environment",
        "INSERT INTO flags_environment (key) VALUES ('x')",
        "DROP TABLE flags_environment",
        "SELECT 1; DELETE FROM flags_environment",
        "WITH x AS (SELECT 1) DELETE FROM flags_environment",
        "PRAGMA query_only = OFF",
    ],
)
def test_sql_validate_spec__write_statement__refused(db, query):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        get_provider("sql").validate_spec({"query": query})
    assert raised.value.field == "spec.query"


def test_sql_validate_spec__unknown_database__field_error(db):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        get_provider("sql").validate_spec({"query": "SELECT 1", "database": "replica9"})
    assert raised.value.field == "spec.database"


def test_sql_measure__bad_sql__provider_error(db, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="SQL error"):
        get_provider("sql").measure(
            {"query": "SELECT no_such_column FROM flags_environment"}, ctx, timeout=5
        )


def test_sql_measure__two_columns__provider_error(db, ctx):
    # When / Then
    with pytest.raises(ProviderError, match="one column"):
        get_provider("sql").measure({"query": "SELECT 1, 2"}, ctx, timeout=5)


def test_sql_measure__runaway_query__cancelled_by_timeout(db, ctx):
    # Given: an endless recursive CTE
    query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
        " SELECT MAX(x) FROM c"
    )
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="statement timeout"):
        get_provider("sql").measure({"query": query}, ctx, timeout=0.3)
    assert time.monotonic() - started < 3


@pytest.mark.postgres
def test_sql_measure__update_in_cte__blocked_by_read_only_transaction(
    environments, ctx
):
    # Given
    query = (
        "WITH changed AS (UPDATE flags_environment SET name = 'hacked' RETURNING 1)"
        " SELECT COUNT(*) FROM changed"
    )
    # When / Then
    with pytest.raises(ProviderError, match="read-only transaction"):
        get_provider("sql").measure({"query": query}, ctx, timeout=5)
    assert not Environment.objects.filter(name="hacked").exists()


@pytest.mark.postgres
def test_sql_measure__update_in_function__blocked_by_read_only_transaction(
    environments, ctx
):
    # Given
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION cp_test_rename() RETURNS integer AS $$"
            " UPDATE flags_environment SET name = 'hacked'; SELECT 1 $$ LANGUAGE sql"
        )
    # When / Then
    with pytest.raises(ProviderError, match="read-only transaction"):
        get_provider("sql").measure(
            {"query": "SELECT cp_test_rename()"}, ctx, timeout=5
        )
    assert not Environment.objects.filter(name="hacked").exists()


@pytest.mark.postgres
def test_sql_measure__pg_sleep_past_timeout__provider_error(db, ctx):
    # Given: the session's own statement timeout (the settings' default)
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        session_timeout = cursor.fetchone()[0]
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="statement timeout"):
        get_provider("sql").measure({"query": "SELECT pg_sleep(5)"}, ctx, timeout=0.2)
    assert time.monotonic() - started < 2
    # the statement timeout did not leak into the caller's transaction
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == session_timeout
