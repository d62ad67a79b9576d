"""The sql provider on the real test database (SQLite and PostgreSQL).

These tests list the control plane's own ``default`` alias in
CANARY_SQL_DATABASES on purpose, to run queries inside the test's
transaction; tests/canary_providers/test_sql_reader.py runs them through a
real read-only role, as production should.
"""

from __future__ import annotations

import time

import pytest
from django.db import connection

from canary.providers import ProviderError, get_provider
from controlplane.audit.actors import SYSTEM
from controlplane.exceptions import InvalidInput
from flags.models import Environment

sql = get_provider("sql")


@pytest.fixture
def on_default(sql_checks_on):
    """SQL checks may query the ``default`` alias (configured on purpose)."""
    sql_checks_on("default")


def test_sql_measure__scalar__value(environments, ctx, on_default):
    # When
    measurement = sql.measure(
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
def test_sql_measure__no_row_or_null__no_data(environments, ctx, on_default, query):
    # When
    measurement = sql.measure({"query": query}, ctx, timeout=5)
    # Then
    assert measurement.value is None


def test_sql_measure__after_measure__caller_transaction_still_writable(
    environments, ctx, on_default
):
    # Given
    sql.measure({"query": "SELECT 1"}, ctx, timeout=5)
    # When: the test's own transaction writes after the read-only savepoint
    Environment.objects.filter(key="staging").update(name="Still writable")
    # Then
    assert Environment.objects.get(key="staging").name == "Still writable"


# -- which database -------------------------------------------------------------


def test_sql_validate_spec__no_alias_configured__field_error_says_how(db):
    # Given: the default settings (CANARY_SQL_DATABASES empty)
    # When
    with pytest.raises(InvalidInput) as raised:
        sql.validate_spec({"query": "SELECT 1"})
    # Then
    assert raised.value.field == "spec.database"
    assert "CANARY_SQL_DATABASES" in raised.value.message
    assert "read-only role" in raised.value.message


def test_sql_validate_spec__default_alias_not_listed__refused(db, sql_checks_on):
    # Given: only another alias is configured for SQL checks
    sql_checks_on("replica")
    # When
    with pytest.raises(InvalidInput) as raised:
        sql.validate_spec({"query": "SELECT 1", "database": "default"})
    # Then
    assert raised.value.field == "spec.database"
    assert "'default' is not configured for SQL checks" in raised.value.message


def test_sql_validate_spec__listed_but_not_in_databases__field_error(db, sql_checks_on):
    # Given
    sql_checks_on("replica9")
    # When / Then
    with pytest.raises(InvalidInput, match="missing from DATABASES") as raised:
        sql.validate_spec({"query": "SELECT 1"})
    assert raised.value.field == "spec.database"


def test_sql_validate_spec__two_aliases_and_none_named__field_error(db, sql_checks_on):
    # Given
    sql_checks_on("default", "replica")
    # When / Then
    with pytest.raises(InvalidInput, match="name the database alias") as raised:
        sql.validate_spec({"query": "SELECT 1"})
    assert raised.value.field == "spec.database"


def test_sql_measure__alias_removed_from_settings_after_save__refused(
    environments, ctx, sql_checks_on
):
    # Given: a spec saved while the alias was configured
    sql_checks_on("default")
    spec = sql.validate_spec({"query": "SELECT COUNT(*) FROM flags_environment"})
    sql_checks_on()
    # When / Then: measuring vets the spec again
    with pytest.raises(InvalidInput) as raised:
        sql.measure(spec, ctx, timeout=5)
    assert raised.value.field == "spec.database"


# -- what the query may be ------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "UPDATE flags_environment SET name = 'x'",
        "DELETE FROM flags_environment",
        "INSERT INTO flags_environment (key) VALUES ('x')",
        "DROP TABLE flags_environment",
        "SELECT 1; DELETE FROM flags_environment",
        "SELECT 1; SELECT 2",
        "WITH x AS (SELECT 1) DELETE FROM flags_environment",
        "WITH gone AS (DELETE FROM flags_environment RETURNING 1)"
        " SELECT COUNT(*) FROM gone",
        "PRAGMA query_only = OFF",
        "SELECT id FROM flags_environment FOR UPDATE",
        "SELECT id FROM flags_environment FOR SHARE",
        "SELECT id INTO stolen FROM flags_environment",
        "VALUES (1)",
        "EXPLAIN ANALYZE SELECT 1",
        "SET statement_timeout = 0",
        "SELECT FROM WHERE (",
        "SELECT 'unterminated",
        "SELECT " + "(" * 2000 + "1" + ")" * 2000,
        "SELECT 1" + " + 1" * 3000,
        "SELECT 1\x00",
        "SELECT '\ud800'",
    ],
)
def test_sql_validate_spec__not_one_plain_select__refused(db, on_default, query):
    # When / Then
    with pytest.raises(InvalidInput) as raised:
        sql.validate_spec({"query": query})
    assert raised.value.field == "spec.query"


@pytest.mark.parametrize(
    ("query", "function"),
    [
        ("SELECT pg_sleep(100)", "pg_sleep"),
        ("SELECT pg_advisory_lock(4242)", "pg_advisory_lock"),
        ("SELECT pg_advisory_xact_lock(4242)", "pg_advisory_xact_lock"),
        ("SELECT pg_try_advisory_lock(4242)", "pg_try_advisory_lock"),
        (
            "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity",
            "pg_terminate_backend",
        ),
        ("SELECT pg_cancel_backend(1)", "pg_cancel_backend"),
        ("SELECT set_config('statement_timeout', '0', false)", "set_config"),
        ("SELECT current_setting('is_superuser')", "current_setting"),
        ("SELECT COUNT(*) FROM dblink('dbname=x', 'SELECT 1') AS t(a int)", "dblink"),
        ("SELECT lo_import('/etc/passwd')", "lo_import"),
        ("SELECT lo_export(1, '/tmp/x')", "lo_export"),
        ("SELECT length(pg_read_file('/etc/passwd'))", "pg_read_file"),
        ("SELECT pg_read_binary_file('/etc/passwd')", "pg_read_binary_file"),
        ('SELECT "pg_sleep"(1)', "pg_sleep"),
        ("SELECT PG_SLEEP(1)", "pg_sleep"),
        ("SELECT COUNT(*) FROM (SELECT pg_sleep(1)) AS s", "pg_sleep"),
        ("SELECT 1 WHERE 1 IN (SELECT pg_advisory_lock(1))", "pg_advisory_lock"),
        ("SELECT COUNT(*) FROM pg_sleep(1)", "pg_sleep"),
        ("SELECT nextval('some_seq')", "nextval"),
        ("SELECT randomblob(100000000)", "randomblob"),
    ],
)
def test_sql_validate_spec__function_not_allowed__refused_by_name(
    db, on_default, query, function
):
    # When
    with pytest.raises(InvalidInput) as raised:
        sql.validate_spec({"query": query})
    # Then
    assert raised.value.field == "spec.query"
    assert function in raised.value.message
    assert "CANARY_SQL_ALLOWED_FUNCTIONS" in raised.value.message


def test_sql_validate_spec__schema_qualified_function__refused(db, on_default):
    # When / Then: pg_catalog.count would be allowed by name; no qualifier is
    with pytest.raises(InvalidInput, match="schema-qualified") as raised:
        sql.validate_spec({"query": "SELECT pg_catalog.count(*) FROM flags_flag"})
    assert raised.value.field == "spec.query"


@pytest.mark.parametrize(
    "query",
    [
        "SELECT COUNT(*) FROM flags_flag WHERE archived = false",
        "SELECT COALESCE(MAX(id), 0) FROM flags_flag",
        "SELECT AVG(id) * 100.0 / NULLIF(COUNT(*), 0) FROM flags_flag",
        "SELECT CAST(COUNT(*) AS float) FROM flags_flag",
        "SELECT CASE WHEN COUNT(*) > 3 THEN 1 ELSE 0 END FROM flags_flag",
        "WITH f AS (SELECT id FROM flags_flag) SELECT COUNT(*) FROM f",
        "SELECT COUNT(*) FROM flags_flag a JOIN flags_flagstate s ON s.flag_id = a.id",
        "SELECT ABS(ROUND(MIN(id) - MAX(id), 2)) FROM flags_flag",
        "SELECT COUNT(*) FROM flags_flag;",
    ],
)
def test_sql_validate_spec__allowed_select__kept(db, on_default, query):
    # When
    spec = sql.validate_spec({"query": query})
    # Then
    assert spec["query"] == query.rstrip(";")


@pytest.mark.postgres
@pytest.mark.parametrize(
    "query",
    [
        "SELECT percentile_cont(0.95) WITHIN GROUP (ORDER BY id) FROM flags_flag",
        "SELECT EXTRACT(EPOCH FROM now() - MAX(created_at)) FROM flags_flag",
        "SELECT COUNT(*) FILTER (WHERE archived) FROM flags_flag",
        "SELECT COUNT(*) FROM flags_flag WHERE created_at > now() - interval '1 hour'",
        "SELECT date_part('epoch', date_trunc('hour', now()))::int",
    ],
)
def test_sql_validate_spec__postgres_functions__kept_and_run(
    db, ctx, on_default, query
):
    # When
    measurement = sql.measure({"query": query}, ctx, timeout=5)
    # Then: vetted and run (no data on an empty table is fine)
    assert measurement.detail["query"] == query


def test_sql_validate_spec__extra_function_allowed_in_settings__kept(db, sql_checks_on):
    # Given
    sql_checks_on("default", CANARY_SQL_ALLOWED_FUNCTIONS=["count", "lower"])
    # When
    spec = sql.validate_spec(
        {"query": "SELECT COUNT(*) FROM flags_flag WHERE LOWER(key) = 'x'"}
    )
    # Then
    assert spec["database"] == "default"


# -- what the result may be -----------------------------------------------------


def test_sql_measure__text_result__error_without_the_value(
    environments, ctx, on_default
):
    # Given: the environment's name is the "secret" a query reads
    Environment.objects.filter(key="production").update(name="Sekrit-Name-42")
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure(
            {"query": "SELECT name FROM flags_environment WHERE key = 'production'"},
            ctx,
            timeout=5,
        )
    # Then
    assert "column 'name' is text, not a number" in raised.value.message
    assert "Sekrit" not in raised.value.message
    assert "Sekrit" not in repr(raised.value.detail)


def test_sql_measure__two_columns_without_column__error(db, ctx, on_default):
    # When / Then
    with pytest.raises(ProviderError, match="name the one to use in spec.column"):
        sql.measure({"query": "SELECT 1 AS a, 2 AS b"}, ctx, timeout=5)


def test_sql_measure__two_columns_with_column__named_value(db, ctx, on_default):
    # When
    measurement = sql.measure(
        {"query": "SELECT 1 AS total, 2 AS failed", "column": "failed"},
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value == 2.0
    assert measurement.detail["columns"] == ["total", "failed"]


def test_sql_measure__named_column_beside_text__error_without_the_value(
    environments, ctx, on_default
):
    # Given
    query = "SELECT id, name FROM flags_environment WHERE key = 'production'"
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure({"query": query, "column": "id"}, ctx, timeout=5)
    # Then
    assert "column 'name' is text" in raised.value.message
    assert "Production" not in raised.value.message + repr(raised.value.detail)


def test_sql_measure__unknown_column__error_lists_columns(db, ctx, on_default):
    # When / Then
    with pytest.raises(ProviderError, match=r"not one of the query's columns \(a\)"):
        sql.measure({"query": "SELECT 1 AS a", "column": "b"}, ctx, timeout=5)


def test_sql_measure__several_rows__error_without_values(environments, ctx, on_default):
    # When
    with pytest.raises(ProviderError, match="more than one row") as raised:
        sql.measure({"query": "SELECT id FROM flags_environment"}, ctx, timeout=5)
    # Then
    assert "value" not in raised.value.detail


# -- what a database error says -------------------------------------------------


def test_sql_measure__bad_sql__sqlstate_only(db, ctx, on_default):
    # When
    with pytest.raises(ProviderError, match="SQL error: database error") as raised:
        sql.measure(
            {"query": "SELECT COUNT(no_such_column) FROM flags_environment"},
            ctx,
            timeout=5,
        )
    # Then: the code, not the database's sentence
    text = raised.value.message + repr(raised.value.detail)
    assert "does not exist" not in text and "no such column" not in text
    expected = (
        "42703 undefined_column"
        if connection.vendor == "postgresql"
        else "SQLITE_ERROR"
    )
    assert expected in raised.value.message


@pytest.mark.postgres
def test_sql_measure__cast_echoes_value__sqlstate_without_the_value(
    environments, ctx, on_default
):
    # Given: casting a text column to integer makes PostgreSQL quote the value
    Environment.objects.filter(key="production").update(name="Sekrit-Name-42")
    query = (
        "SELECT CAST(name AS integer) FROM flags_environment WHERE key = 'production'"
    )
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure({"query": query}, ctx, timeout=5)
    # Then
    assert raised.value.message == (
        "SQL error: database error 22P02 invalid_text_representation"
    )
    assert "Sekrit" not in repr(raised.value.detail)


# -- how long it may take -------------------------------------------------------


def test_sql_measure__runaway_query__cancelled_by_timeout(db, ctx, on_default):
    # Given: an endless recursive CTE
    query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
        " SELECT MAX(x) FROM c"
    )
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="statement timeout"):
        sql.measure({"query": query}, ctx, timeout=0.3)
    assert time.monotonic() - started < 3


def test_sql_measure__check_timeout_above_cap__stopped_at_the_cap(
    db, ctx, sql_checks_on
):
    # Given: the check asks for 100 s, the setting caps every query at 0.3 s
    sql_checks_on("default", CANARY_SQL_STATEMENT_TIMEOUT=0.3)
    query = (
        "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
        " SELECT MAX(x) FROM c"
    )
    started = time.monotonic()
    # When
    with pytest.raises(ProviderError, match="0.3s statement timeout") as raised:
        sql.measure({"query": query}, ctx, timeout=100)
    # Then
    assert time.monotonic() - started < 3
    assert raised.value.detail["timeout_s"] == 0.3


@pytest.mark.postgres
def test_sql_measure__pg_sleep_allowed_in_settings__still_capped(
    db, ctx, sql_checks_on
):
    # Given: an operator allowed pg_sleep; the statement cap still holds
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        session_timeout = cursor.fetchone()[0]
    sql_checks_on(
        "default",
        CANARY_SQL_ALLOWED_FUNCTIONS=["pg_sleep"],
        CANARY_SQL_STATEMENT_TIMEOUT=0.2,
    )
    started = time.monotonic()
    # When / Then
    with pytest.raises(ProviderError, match="57014 query_canceled"):
        sql.measure({"query": "SELECT pg_sleep(100)"}, ctx, timeout=100)
    assert time.monotonic() - started < 2
    # the statement timeout did not leak into the caller's transaction
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        assert cursor.fetchone()[0] == session_timeout


@pytest.mark.postgres
def test_sql_measure__allowed_function_that_writes__blocked_by_read_only_transaction(
    environments, ctx, sql_checks_on
):
    # Given: a function that writes, allowed by name in settings
    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE FUNCTION cp_test_rename() RETURNS integer AS $$"
            " UPDATE flags_environment SET name = 'hacked'; SELECT 1 $$ LANGUAGE sql"
        )
    sql_checks_on("default", CANARY_SQL_ALLOWED_FUNCTIONS=["cp_test_rename"])
    # When / Then
    with pytest.raises(ProviderError, match="25006 read_only_sql_transaction"):
        sql.measure({"query": "SELECT cp_test_rename()"}, ctx, timeout=5)
    assert not Environment.objects.filter(name="hacked").exists()


def test_sql_validate_spec__user_function_not_allowed__refused(db, on_default):
    # When / Then
    with pytest.raises(InvalidInput, match="cp_test_rename") as raised:
        sql.validate_spec({"query": "SELECT cp_test_rename()"})
    assert raised.value.field == "spec.query"


def test_sql_measure__comparison_column__value_and_comparison(
    environments, ctx, on_default
):
    # When: one row holds the treated value and what it is compared with
    measurement = sql.measure(
        {
            "query": "SELECT 0.07 AS treated, 0.01 AS control",
            "column": "treated",
            "comparison_column": "control",
        },
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value == pytest.approx(0.07)
    assert measurement.detail["comparison_value"] == pytest.approx(0.01)


def test_sql_measure__comparison_column_missing__provider_error(
    environments, ctx, on_default
):
    # When / Then
    with pytest.raises(ProviderError, match="no column 'control'"):
        sql.measure(
            {"query": "SELECT 0.07 AS treated", "comparison_column": "control"},
            ctx,
            timeout=5,
        )


@pytest.mark.parametrize(
    ("treated", "verdict", "answer"),
    [(0.07, "fail", "worse"), (0.011, "pass", "not_worse")],
)
def test_check_judge__relative_with_live_comparison__worse_or_not_worse(
    production, flag_factory, on_default, treated, verdict, answer
):
    # Given: a relative check (up to 20% above the comparison)
    from canary import services

    rollout = services.rollout_create(
        actor=SYSTEM,
        flag=flag_factory("cmp_flag"),
        environment=production,
        name="live comparison",
        phases=[{"percentage": 50}],
        checks=[
            {
                "name": "db_errors",
                "provider": "sql",
                "spec": {
                    "query": "SELECT 0.07 AS treated, 0.01 AS control",
                    "column": "treated",
                    "comparison_column": "control",
                },
                "mode": "relative",
                "relative_tolerance": 0.2,
            }
        ],
    )
    check = rollout.checks.get()
    check_judge = services.check_judge
    # When
    judgement, detail = check_judge(check, value=treated, samples=1, comparison=0.01)
    # Then
    assert judgement.verdict == verdict
    assert detail["answer"] == answer
    assert detail["baseline"] == 0.01
