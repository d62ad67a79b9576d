"""Fixtures for sql health checks: a real read-only role and its alias.

``sql_reader`` (PostgreSQL only) creates, once per test session, a login
role that may connect to the test database and SELECT one table
(``METRIC_TABLE``) and nothing else, with ``default_transaction_read_only``
and ``statement_timeout`` set on the role as docs/canary.md recommends, and
a DATABASES alias (``READER_ALIAS``) that logs in with it. The alias is a
test mirror of ``default`` (same database, not created or flushed again);
its connection is a session of its own, so a check's query sees only
committed rows. ``sql_checks_on`` lists aliases in ``CANARY_SQL_DATABASES``
for one test.

Import these into a conftest.py (``from tests.sql_fixtures import ...``).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

READER_ALIAS = "canary_sql_reader"
METRIC_TABLE = "cp_sqlcheck_metric"
METRIC_ROWS = 300  # 300^4 rows in a four-way cross join: far past any cap


def _admin_connect(params: dict):
    import psycopg

    return psycopg.connect(
        host=params.get("HOST") or None,
        port=params.get("PORT") or None,
        user=params.get("USER") or None,
        password=params.get("PASSWORD") or None,
        dbname=params["NAME"],
        autocommit=True,
    )


def _drop_role(cursor, role: str) -> None:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role])
    if cursor.fetchone():
        # DROP OWNED revokes its grants in this database and on it.
        cursor.execute(f'DROP OWNED BY "{role}"')
        cursor.execute(f'DROP ROLE "{role}"')


@pytest.fixture(scope="session")
def sql_reader(django_db_setup, django_db_blocker) -> Iterator[str]:
    """Yield the alias of a real read-only role on the test database."""
    from django.conf import settings
    from django.db import connections

    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    params = dict(connections["default"].settings_dict)
    database = params["NAME"]
    # Role names are global to the server: this one is named after this
    # run's own test database.
    role = f"{database}_reader"[:63]
    password = secrets.token_hex(16)
    with django_db_blocker.unblock(), _admin_connect(params) as admin:
        with admin.cursor() as cursor:
            _drop_role(cursor, role)
            cursor.execute(
                f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{password}' NOSUPERUSER"
                " NOCREATEDB NOCREATEROLE NOINHERIT"
            )
            cursor.execute(
                f'ALTER ROLE "{role}" SET default_transaction_read_only = on'
            )
            cursor.execute(f"ALTER ROLE \"{role}\" SET statement_timeout = '5s'")
            cursor.execute(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"')
            cursor.execute(f'GRANT USAGE ON SCHEMA public TO "{role}"')
            cursor.execute(f"DROP TABLE IF EXISTS {METRIC_TABLE}")
            cursor.execute(
                f"CREATE TABLE {METRIC_TABLE} (id integer PRIMARY KEY,"
                " name text NOT NULL, value numeric NOT NULL)"
            )
            cursor.execute(
                f"INSERT INTO {METRIC_TABLE}"
                " SELECT i, 'metric-' || i, i * 0.5 FROM generate_series(1, %s) i",
                [METRIC_ROWS],
            )
            cursor.execute(f'GRANT SELECT ON {METRIC_TABLE} TO "{role}"')
    alias_settings = {
        **params,
        "USER": role,
        "PASSWORD": password,
        "CONN_MAX_AGE": 0,
        "TEST": {**params.get("TEST", {}), "MIRROR": "default"},
    }
    connections.settings[READER_ALIAS] = alias_settings
    settings.DATABASES[READER_ALIAS] = alias_settings
    try:
        yield READER_ALIAS
    finally:
        # Other tests may have rebuilt the connection settings meanwhile;
        # the role's sessions are ended below in any case.
        if hasattr(connections._connections, READER_ALIAS):
            connections[READER_ALIAS].close()
            del connections[READER_ALIAS]
        connections.settings.pop(READER_ALIAS, None)
        settings.DATABASES.pop(READER_ALIAS, None)
        with django_db_blocker.unblock(), _admin_connect(params) as admin:
            with admin.cursor() as cursor:
                cursor.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE usename = %s",
                    [role],
                )
                _drop_role(cursor, role)
                cursor.execute(f"DROP TABLE IF EXISTS {METRIC_TABLE}")


UNREACHABLE_ALIAS = "canary_sql_unreachable"


@pytest.fixture(scope="session")
def sql_unreachable(django_db_setup) -> Iterator[str]:
    """Yield an alias whose server does not listen (a closed loopback port)."""
    import socket

    from django.conf import settings
    from django.db import connections

    if connections["default"].vendor != "postgresql":
        pytest.skip("needs PostgreSQL (set DATABASE_URL)")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    params = dict(connections["default"].settings_dict)
    alias_settings = {
        **params,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "CONN_MAX_AGE": 0,
        "OPTIONS": {**params.get("OPTIONS", {}), "connect_timeout": 2},
        "TEST": {**params.get("TEST", {}), "MIRROR": "default"},
    }
    connections.settings[UNREACHABLE_ALIAS] = alias_settings
    settings.DATABASES[UNREACHABLE_ALIAS] = alias_settings
    try:
        yield UNREACHABLE_ALIAS
    finally:
        connections.settings.pop(UNREACHABLE_ALIAS, None)
        settings.DATABASES.pop(UNREACHABLE_ALIAS, None)


@pytest.fixture
def sql_checks_on(settings) -> Callable[..., None]:
    """Return on(*aliases): list them in CANARY_SQL_DATABASES for this test."""

    def on(*aliases: str, **more: object) -> None:
        settings.CONTROLPLANE = {
            **(settings.CONTROLPLANE or {}),
            "CANARY_SQL_DATABASES": list(aliases),
            **more,
        }

    return on
