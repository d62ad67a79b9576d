"""Staleness for real: a serving process on its own PostgreSQL database keeps
answering (marked stale) while the database refuses connections, and recovers
by itself when it accepts them again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from django.db import connection, connections

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STALE_DB = "cp_serve_stale"
ROOT = Path(__file__).resolve().parents[2]

# The serving process: set up data through the services, then serve the
# project's WSGI app on a free port with the production background thread.
SERVER = r"""
import json, os, sys
import django
django.setup()
from django.core.management import call_command
from controlplane.audit.actors import SYSTEM
from controlplane.apikeys.services import apikey_create
from flags import services
if os.environ.get("STALE_MIGRATE"):
    call_command("migrate", verbosity=0)
env = services.environment_create(actor=SYSTEM, key="production", name="Production")
flag = services.flag_create(actor=SYSTEM, key="sequential_workflow", name="sw")
services.flag_state_set_enabled(actor=SYSTEM, flag=flag, environment=env, enabled=True)
services.flag_state_set_percentage(actor=SYSTEM, flag=flag, environment=env, percentage=100)
_, raw = apikey_create(actor=SYSTEM, name="stale-test", scope="server", environment=env)
from django.db import connections
connections.close_all()
from wsgiref.simple_server import WSGIRequestHandler, make_server
from controlplane.wsgi import application
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
server = make_server("127.0.0.1", 0, application, handler_class=Quiet)
print(json.dumps({"port": server.server_port, "key": raw}), flush=True)
server.serve_forever()
"""


def admin_sql(*statements: str) -> None:
    import psycopg

    params = {
        k: v
        for k, v in connection.get_connection_params().items()
        if k in ("host", "port", "user", "password")
    }
    with psycopg.connect(
        dbname="postgres", autocommit=True, connect_timeout=5, **params
    ) as conn:
        for statement in statements:
            conn.execute(statement)


def block(allow: bool) -> None:
    statements = [
        f"ALTER DATABASE {STALE_DB} ALLOW_CONNECTIONS {'true' if allow else 'false'}"
    ]
    if not allow:
        statements.append(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE datname = '{STALE_DB}' AND pid <> pg_backend_pid()"
        )
    admin_sql(*statements)


@pytest.fixture
def stale_database():
    """A fresh database with the schema (copied from the test database)."""
    admin_sql(f"DROP DATABASE IF EXISTS {STALE_DB} WITH (FORCE)")
    template = connection.settings_dict["NAME"]
    connections.close_all()
    migrate = False
    try:
        admin_sql(f"CREATE DATABASE {STALE_DB} TEMPLATE {template}")
    except Exception:  # the template is in use: build the schema instead
        admin_sql(f"CREATE DATABASE {STALE_DB}")
        migrate = True
    yield migrate
    admin_sql(f"DROP DATABASE IF EXISTS {STALE_DB} WITH (FORCE)")


@pytest.fixture
def serving_process(stale_database):
    params = connection.get_connection_params()
    url = (
        f"postgres://{params.get('user', 'postgres')}"
        f"{':' + params['password'] if params.get('password') else ''}"
        f"@{params.get('host', '127.0.0.1')}:{params.get('port', 5432)}/{STALE_DB}"
    )
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "false",
        "SECRET_KEY": "stale-test",
        "LOG_LEVEL": "ERROR",
        "DATABASE_CONN_MAX_AGE": "60",
    }
    if stale_database:
        env["STALE_MIGRATE"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        if not line:
            pytest.fail(f"serving process failed: {process.stderr.read()[-2000:]}")
        yield json.loads(line)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def evaluate(port: int, key: str) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/evaluate",
        method="POST",
        data=json.dumps({"context": {"merchant": "m-7"}}).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_until(predicate, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is not None:
            return last
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s")


def test_serving__database_refuses_connections__stale_answers_then_recovery(
    serving_process,
):
    # Given: the process serves from its database
    port, key = serving_process["port"], serving_process["key"]
    fresh = evaluate(port, key)
    assert fresh["stale"] is False
    assert fresh["flags"][0]["value"] is True
    try:
        # When: the database refuses every connection
        block(allow=False)
        stale = wait_until(
            lambda: (lambda b: b if b["stale"] else None)(evaluate(port, key)),
            timeout=10,
        )
        # Then: still answering, with the same answer, marked stale
        assert stale["flags"] == fresh["flags"]
        assert stale["version"] == fresh["version"]
    finally:
        # When: it accepts connections again
        block(allow=True)
    recovered = wait_until(
        lambda: (lambda b: b if not b["stale"] else None)(evaluate(port, key)),
        timeout=20,
    )
    # Then
    assert recovered["flags"] == fresh["flags"]
