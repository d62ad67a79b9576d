"""SQL checks through a real read-only PostgreSQL role (tests/sql_fixtures.py).

The attacks of the hardening report, replayed on the alias production
should use: a login role that may SELECT one table and nothing else.
"""

from __future__ import annotations

import time

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.db import connection

from canary.providers import ProviderError, get_provider
from controlplane.exceptions import InvalidInput
from tests.sql_fixtures import (
    METRIC_ROWS,
    METRIC_TABLE,
    READER_ALIAS,
    UNREACHABLE_ALIAS,
)

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.django_db(databases=["default", READER_ALIAS]),
]

sql = get_provider("sql")


@pytest.fixture
def reader(sql_reader, sql_checks_on) -> str:
    """SQL checks may query the read-only alias only."""
    sql_checks_on(sql_reader)
    return sql_reader


def _advisory_locks() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT COUNT(*) FROM pg_locks WHERE locktype = 'advisory'"
            " AND objid = 4242 AND database ="
            " (SELECT oid FROM pg_database WHERE datname = current_database())"
        )
        return cursor.fetchone()[0]


def test_sql_reader_measure__granted_table__value(reader, ctx):
    # When
    measurement = sql.measure(
        {"query": f"SELECT COUNT(*) FROM {METRIC_TABLE}"}, ctx, timeout=5
    )
    # Then
    assert measurement.value == float(METRIC_ROWS)
    assert measurement.detail["database"] == READER_ALIAS


def test_sql_reader_measure__one_row_of_numbers__named_column(reader, ctx):
    # When
    measurement = sql.measure(
        {
            "query": f"SELECT COUNT(*) AS n, MAX(value) AS top FROM {METRIC_TABLE}",
            "column": "top",
        },
        ctx,
        timeout=5,
    )
    # Then
    assert measurement.value == METRIC_ROWS * 0.5


def test_sql_reader_measure__session_table__refused_by_privileges_not_leaked(
    reader, ctx
):
    # Given: a live admin session in the control plane's own tables
    session = SessionStore()
    session["_auth_user_id"] = "1"
    session.create()
    key = session.session_key
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure({"query": "SELECT session_key FROM django_session"}, ctx, timeout=5)
    # Then
    assert (
        raised.value.message == "SQL error: database error 42501 insufficient_privilege"
    )
    assert key not in raised.value.message + repr(raised.value.detail)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT COUNT(*) FROM auth_user WHERE password LIKE 'md5%'",
        "SELECT COUNT(*) FROM apikeys_apikey",
        "SELECT COUNT(*) FROM audit_auditevent",
    ],
)
def test_sql_reader_measure__other_app_tables__insufficient_privilege(
    reader, ctx, query
):
    # When / Then
    with pytest.raises(ProviderError, match="42501 insufficient_privilege"):
        sql.measure({"query": query}, ctx, timeout=5)


def test_sql_reader_measure__slow_cross_join__stopped_at_the_cap(
    reader, ctx, sql_checks_on
):
    # Given: a check asking for 100 s; the setting caps queries at 0.5 s
    sql_checks_on(reader, CANARY_SQL_STATEMENT_TIMEOUT=0.5)
    query = (
        f"SELECT COUNT(*) FROM {METRIC_TABLE} a, {METRIC_TABLE} b,"
        f" {METRIC_TABLE} c, {METRIC_TABLE} d"
    )
    started = time.monotonic()
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure({"query": query}, ctx, timeout=100)
    # Then
    elapsed = time.monotonic() - started
    assert raised.value.message == (
        "SQL error: query cancelled at the 0.5s statement timeout"
        " (database error 57014 query_canceled)"
    )
    assert 0.4 < elapsed < 3


def test_sql_reader_measure__pg_sleep_100__refused_before_it_runs(reader, ctx):
    # Given
    started = time.monotonic()
    # When / Then
    with pytest.raises(InvalidInput, match="pg_sleep") as raised:
        sql.measure({"query": "SELECT pg_sleep(100)"}, ctx, timeout=100)
    assert raised.value.field == "spec.query"
    assert time.monotonic() - started < 1


@pytest.mark.parametrize(
    "query",
    [
        "SELECT pg_advisory_lock(4242)",
        "SELECT COUNT(*) FROM (SELECT pg_advisory_lock(4242)) AS l",
        "SELECT pg_catalog.pg_advisory_lock(4242)",
    ],
)
def test_sql_reader_measure__advisory_lock__refused_and_none_held(reader, ctx, query):
    # When
    with pytest.raises(InvalidInput) as raised:
        sql.measure({"query": query}, ctx, timeout=5)
    # Then
    assert raised.value.field == "spec.query"
    assert _advisory_locks() == 0


def test_sql_reader_measure__transaction_settings__read_only_and_capped(
    reader, ctx, sql_checks_on
):
    # Given: current_setting allowed for this test only, to look inside
    sql_checks_on(
        reader,
        CANARY_SQL_ALLOWED_FUNCTIONS=["current_setting"],
        CANARY_SQL_STATEMENT_TIMEOUT=0.8,
        CANARY_SQL_LOCK_TIMEOUT=0.25,
        CANARY_SQL_IDLE_IN_TRANSACTION_TIMEOUT=3,
    )
    query = (
        "SELECT CASE WHEN current_setting('transaction_read_only') = 'on'"
        " AND current_setting('statement_timeout') = '800ms'"
        " AND current_setting('lock_timeout') = '250ms'"
        " AND current_setting('idle_in_transaction_session_timeout') = '3s'"
        " THEN 1 ELSE 0 END"
    )
    # When
    measurement = sql.measure({"query": query}, ctx, timeout=30)
    # Then
    assert measurement.value == 1.0


def test_sql_reader_measure__check_timeout_shorter_than_cap__check_timeout_wins(
    reader, ctx, sql_checks_on
):
    # Given
    sql_checks_on(reader, CANARY_SQL_ALLOWED_FUNCTIONS=["current_setting"])
    query = (
        "SELECT CASE WHEN current_setting('statement_timeout') = '300ms'"
        " AND current_setting('lock_timeout') = '300ms' THEN 1 ELSE 0 END"
    )
    # When
    measurement = sql.measure({"query": query}, ctx, timeout=0.3)
    # Then
    assert measurement.value == 1.0


def test_sql_reader_measure__lock_held_elsewhere__lock_timeout(
    reader, ctx, sql_checks_on, sql_reader
):
    # Given: another session holds an ACCESS EXCLUSIVE lock on the table
    from tests.sql_fixtures import _admin_connect

    sql_checks_on(reader, CANARY_SQL_LOCK_TIMEOUT=0.2)
    with _admin_connect(connection.settings_dict) as other:
        other.autocommit = False
        other.execute(f"LOCK TABLE {METRIC_TABLE} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        # When
        with pytest.raises(ProviderError) as raised:
            sql.measure(
                {"query": f"SELECT COUNT(*) FROM {METRIC_TABLE}"}, ctx, timeout=5
            )
        other.rollback()
    # Then
    assert "0.2s lock timeout" in raised.value.message
    assert "55P03 lock_not_available" in raised.value.message
    assert time.monotonic() - started < 2


def test_sql_reader_measure__allowed_function_that_writes__read_only_refuses(
    reader, ctx, sql_checks_on
):
    # Given: a function that writes, committed, and allowed by name
    from tests.sql_fixtures import _admin_connect

    sql_checks_on(reader, CANARY_SQL_ALLOWED_FUNCTIONS=["cp_test_reader_write"])
    with _admin_connect(connection.settings_dict) as admin:
        admin.execute(
            "CREATE OR REPLACE FUNCTION cp_test_reader_write() RETURNS integer AS $$"
            f" UPDATE {METRIC_TABLE} SET value = 0; SELECT 1 $$ LANGUAGE sql"
        )
        admin.execute("GRANT EXECUTE ON FUNCTION cp_test_reader_write() TO PUBLIC")
        try:
            # When
            with pytest.raises(ProviderError) as raised:
                sql.measure({"query": "SELECT cp_test_reader_write()"}, ctx, timeout=5)
        finally:
            admin.execute("DROP FUNCTION cp_test_reader_write()")
        # Then
        assert "25006 read_only_sql_transaction" in raised.value.message
        rows = admin.execute(
            f"SELECT COUNT(*) FROM {METRIC_TABLE} WHERE value = 0"
        ).fetchone()
        assert rows[0] == 0


# transaction=True: a test transaction would connect to the alias up front.
@pytest.mark.django_db(transaction=True, databases=["default", UNREACHABLE_ALIAS])
def test_sql_measure__server_unreachable__error_without_database_message(
    sql_unreachable, sql_checks_on, ctx
):
    # Given: an alias whose server does not listen
    sql_checks_on(sql_unreachable)
    # When
    with pytest.raises(ProviderError) as raised:
        sql.measure({"query": "SELECT 1"}, ctx, timeout=5)
    # Then: the class of the failure, not the driver's sentence
    assert raised.value.message == (
        "SQL error: database error (OperationalError, no SQLSTATE)"
    )
