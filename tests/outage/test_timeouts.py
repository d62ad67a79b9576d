"""Bounded waits on PostgreSQL: connect, statement and read timeouts, and the
commands that lift them for their own session."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from django.db import connection

from controlplane.db import timeouts_lifted
from controlplane.db.postgresql.base import BoundedWaitConnection
from tests.outage.proxy import FreezableProxy

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]


def show_statement_timeout() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        return cursor.fetchone()[0]


def test_database_settings__postgres__every_wait_bounded(db):
    # Given / When: the connection the settings give every process
    options = connection.settings_dict["OPTIONS"]
    # Then: connect, statement and read timeouts and keepalives by default
    assert options["connect_timeout"] == 3
    assert show_statement_timeout() == "15s"
    assert connection.connection.wait_timeout == 20
    assert options["keepalives"] == 1
    assert "read_timeout" not in connection.get_connection_params()


def test_timeouts_lifted__block__no_timeout_inside_restored_after(db):
    # Given
    assert show_statement_timeout() == "15s"
    # When
    with timeouts_lifted():
        inside = show_statement_timeout()
        wait_inside = connection.connection.wait_timeout
    # Then
    assert (inside, wait_inside) == ("0", None)
    assert show_statement_timeout() == "15s"
    assert connection.connection.wait_timeout == 20


@pytest.fixture
def frozen_proxy():
    params = connection.get_connection_params()
    proxy = FreezableProxy(
        (params.get("host") or "127.0.0.1", params.get("port") or 5432)
    )
    yield proxy
    proxy.close()


def bounded_connect(
    proxy: FreezableProxy, wait_timeout: float
) -> BoundedWaitConnection:
    params = connection.get_connection_params()
    conn = BoundedWaitConnection.connect(
        host="127.0.0.1",
        port=proxy.port,
        dbname=params["dbname"],
        user=params.get("user", "postgres"),
        password=params.get("password"),
        connect_timeout=2,
        autocommit=True,
    )
    conn.wait_timeout = wait_timeout
    return conn


def test_bounded_wait_connection__server_frozen__operational_error_within_timeout(
    db, frozen_proxy
):
    # Given: an open connection, then a server that stops answering (no RST)
    conn = bounded_connect(frozen_proxy, wait_timeout=1)
    assert conn.execute("SELECT 1").fetchone() == (1,)
    frozen_proxy.freeze()
    outcome: list[BaseException | None] = []

    def query() -> None:
        try:
            conn.execute("SELECT 1")
            outcome.append(None)
        except BaseException as exc:  # reported to the test thread
            outcome.append(exc)

    # When
    started = time.monotonic()
    worker = threading.Thread(target=query, daemon=True)
    worker.start()
    worker.join(timeout=10)
    elapsed = time.monotonic() - started
    # Then: a clean error after the bound, the connection dropped, no hang
    assert outcome, "the query was still blocked after 10 s"
    assert isinstance(outcome[0], psycopg.OperationalError)
    assert "did not answer within 1 s" in str(outcome[0])
    assert elapsed < 3
    assert conn.closed


def test_bounded_wait_connection__slow_live_query__not_cut_below_bound(
    db, frozen_proxy
):
    # Given
    conn = bounded_connect(frozen_proxy, wait_timeout=3)
    # When: a query that takes a while, well inside the bound
    row = conn.execute("SELECT pg_sleep(0.5), 42").fetchone()
    # Then
    assert row[1] == 42
    conn.close()


# With a 0.3 s statement timeout: a long statement is cut, except under
# timeouts_lifted and inside `migrate` (seen by a pre_migrate receiver).
SCRIPT = r"""
import django
django.setup()
from django.core.management import call_command
from django.db import OperationalError, connection
from django.db.models.signals import pre_migrate
from controlplane.db import timeouts_lifted

def sleep():
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(0.6)")
        return "ran"
    except OperationalError:
        return "cut"

seen = []
def during_migrate(**kwargs):
    with connection.cursor() as cursor:
        cursor.execute("SHOW statement_timeout")
        seen.append(cursor.fetchone()[0])
pre_migrate.connect(during_migrate)

print("before", sleep())
with timeouts_lifted():
    print("lifted", sleep())
print("after", sleep())
call_command("migrate", verbosity=0)
print("migrate", sorted(set(seen)))
print("after-migrate", sleep())
"""


def test_long_statement__lifted_or_migrate__not_cut_elsewhere_cut(db):
    # Given: a process with a statement timeout shorter than the statement
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_STATEMENT_TIMEOUT": "0.3",
        "DATABASE_READ_TIMEOUT": "5",
        "DATABASE_URL": (
            f"postgres://{connection.settings_dict['USER'] or 'postgres'}@"
            f"{connection.settings_dict['HOST'] or '127.0.0.1'}:"
            f"{connection.settings_dict['PORT'] or 5432}/"
            f"{connection.settings_dict['NAME']}"
        ),
    }
    # When
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    # Then
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines() == [
        "before cut",
        "lifted ran",
        "after cut",
        "migrate ['0']",
        "after-migrate cut",
    ]
