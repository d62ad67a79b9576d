"""A frozen PostgreSQL, for real: gunicorn (sync workers, as in production)
serves through a TCP proxy that this test freezes like SIGSTOP would (no RST,
no answer), on a database of its own.

- the management API and the admin answer 503 with Retry-After within the
  read timeout instead of blocking a worker until it is killed;
- a process started during the outage serves evaluations from the last
  known good ruleset and key hashes on disk, marked stale; a valid key it has
  never seen gets 503, and once the database is back an unknown key gets 401.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.db import connection, connections

from tests.outage.proxy import FreezableProxy

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

OUTAGE_DB = "cp_h_outage_frozen"
ROOT = Path(__file__).resolve().parents[2]
GUNICORN = Path(sys.executable).with_name("gunicorn")
# the bounds under test, short so the test is quick (production: 3/15/20 s)
CONNECT_TIMEOUT, STATEMENT_TIMEOUT, READ_TIMEOUT = 2, 2, 3
# a worker blocked on the database is killed after this (gunicorn --timeout)
WORKER_TIMEOUT = 30

# Data through the services: a flag on for everyone, a server key, a
# superuser with a management key and an admin session.
SETUP = r"""
import json, os
import django
django.setup()
from django.core.management import call_command
if os.environ.get("OUTAGE_MIGRATE"):
    call_command("migrate", verbosity=0)
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from controlplane.audit.actors import SYSTEM
from controlplane.apikeys.services import apikey_create
from flags import services
env = services.environment_create(actor=SYSTEM, key="production", name="Production")
flag = services.flag_create(actor=SYSTEM, key="sequential_workflow", name="sw")
services.flag_state_set_enabled(actor=SYSTEM, flag=flag, environment=env, enabled=True)
services.flag_state_set_percentage(
    actor=SYSTEM, flag=flag, environment=env, percentage=100
)
_, server = apikey_create(actor=SYSTEM, name="seen", scope="server", environment=env)
ops = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw-ops-1")
_, management = apikey_create(actor=SYSTEM, name="ops", scope="management", user=ops)
session = SessionStore()
session[SESSION_KEY] = str(ops.pk)
session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
session[HASH_SESSION_KEY] = ops.get_session_auth_hash()
session.save()
print(json.dumps({"server": server, "management": management,
                  "session": session.session_key}))
"""

NEW_KEY = r"""
import django
django.setup()
from controlplane.audit.actors import SYSTEM
from controlplane.apikeys.services import apikey_create
from flags.models import Environment
env = Environment.objects.get(key="production")
print(apikey_create(actor=SYSTEM, name="unseen", scope="server", environment=env)[1])
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


def database_url(host: str, port: int) -> str:
    params = connection.get_connection_params()
    password = f":{params['password']}" if params.get("password") else ""
    return (
        f"postgres://{params.get('user', 'postgres')}{password}"
        f"@{host}:{port}/{OUTAGE_DB}"
    )


def django_env(url: str, var_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "false",
        "SECRET_KEY": "outage-test",
        "LOG_LEVEL": "ERROR",
        "CONTROLPLANE_VAR_DIR": str(var_dir),
        "DATABASE_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "DATABASE_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
        "DATABASE_READ_TIMEOUT": str(READ_TIMEOUT),
    }


def run_script(script: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def outage_db(
    django_db_setup, django_db_blocker, tmp_path_factory
) -> Iterator[dict[str, Any]]:
    """A database of this module, its data, and a freezable proxy to it."""
    with django_db_blocker.unblock():
        params = connection.get_connection_params()
        target = (params.get("host") or "127.0.0.1", int(params.get("port") or 5432))
        template = connection.settings_dict["NAME"]
        admin_sql(f"DROP DATABASE IF EXISTS {OUTAGE_DB} WITH (FORCE)")
        connections.close_all()
        migrate = False
        try:
            admin_sql(f"CREATE DATABASE {OUTAGE_DB} TEMPLATE {template}")
        except Exception:  # the template is in use: build the schema instead
            admin_sql(f"CREATE DATABASE {OUTAGE_DB}")
            migrate = True
        direct = django_env(database_url(*target), tmp_path_factory.mktemp("setup"))
        if migrate:
            direct["OUTAGE_MIGRATE"] = "1"
        data = json.loads(run_script(SETUP, direct))
        proxy = FreezableProxy(target)
        try:
            yield {**data, "proxy": proxy, "direct": direct}
        finally:
            proxy.close()
            admin_sql(f"DROP DATABASE IF EXISTS {OUTAGE_DB} WITH (FORCE)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """gunicorn with one sync worker, serving through the proxy."""

    def __init__(self, proxy: FreezableProxy, var_dir: Path) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                str(GUNICORN),
                "--workers=1",
                "--worker-class=sync",
                f"--timeout={WORKER_TIMEOUT}",
                "--graceful-timeout=2",
                f"--bind=127.0.0.1:{self.port}",
                "controlplane.wsgi",
            ],
            cwd=ROOT,
            env=django_env(database_url("127.0.0.1", proxy.port), var_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited: {self.process.stderr.read()[-3000:]}")
            try:
                # answered by a booted worker without the database (405)
                self.request("GET", "/api/v1/evaluate", timeout=1)
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        pytest.fail("gunicorn did not answer within 30 s")

    def request(
        self,
        method: str,
        path: str,
        *,
        key: str | None = None,
        cookie: str | None = None,
        body: dict | None = None,
        timeout: float = WORKER_TIMEOUT / 2,
    ) -> tuple[int, dict[str, str], bytes]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        if cookie:
            headers["Cookie"] = f"sessionid={cookie}"
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            method=method,
            data=json.dumps(body).encode() if body is not None else None,
            headers=headers,
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def evaluate(self, key: str) -> tuple[int, dict[str, str], dict]:
        status, headers, raw = self.request(
            "POST",
            "/api/v1/evaluate",
            key=key,
            body={"context": {"merchant": "m-7"}},
        )
        return status, headers, json.loads(raw)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)


@pytest.fixture
def servers(outage_db) -> Iterator[Callable[[Path], Server]]:
    started: list[Server] = []

    def start(var_dir: Path) -> Server:
        server = Server(outage_db["proxy"], var_dir)
        started.append(server)
        return server

    try:
        yield start
    finally:
        outage_db["proxy"].thaw()
        for server in started:
            server.stop()


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def wait_for(predicate: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout} s")


def test_management_api__database_frozen__503_retry_after_within_read_timeout(
    outage_db, servers, tmp_path
):
    # Given: a worker with a warm connection and the key in its cache
    server = servers(tmp_path)
    key = outage_db["management"]
    status, _, _ = server.request("GET", "/api/v1/flags", key=key)
    assert status == 200
    # When: the database stops answering
    outage_db["proxy"].freeze()
    (status, headers, raw), elapsed = timed(
        lambda: server.request("GET", "/api/v1/flags", key=key)
    )
    # Then: a native 503 within the read timeout, not a worker blocked until
    # it is killed
    assert status == 503, raw
    assert json.loads(raw)["code"] == "database_unavailable"
    assert json.loads(raw)["errors"] == {}
    assert int(headers["Retry-After"]) > 0
    assert elapsed < READ_TIMEOUT + 3
    # When: the next request, on a new connection (the hung one was dropped)
    (status, headers, raw), elapsed = timed(
        lambda: server.request("GET", "/api/v1/flags", key=key)
    )
    # Then: the connect timeout answers it
    assert status == 503, raw
    assert elapsed < CONNECT_TIMEOUT + 3


def test_admin__database_frozen__html_503_retry_after(outage_db, servers, tmp_path):
    # Given: a logged-in operator on the admin
    server = servers(tmp_path)
    cookie = outage_db["session"]
    status, _, _ = server.request("GET", "/admin/flags/flag/", cookie=cookie)
    assert status == 200
    # When
    outage_db["proxy"].freeze()
    (status, headers, raw), elapsed = timed(
        lambda: server.request("GET", "/admin/flags/flag/", cookie=cookie)
    )
    # Then
    assert status == 503, raw[:500]
    assert headers["Content-Type"].startswith("text/html")
    assert b"Service unavailable" in raw
    assert int(headers["Retry-After"]) > 0
    assert elapsed < READ_TIMEOUT + 3


def test_evaluation__process_started_during_outage__serves_last_known_good_stale(
    outage_db, servers, tmp_path
):
    # Given: a process that served once with the database up (and so wrote
    # its last known good state), then stopped
    proxy, seen = outage_db["proxy"], outage_db["server"]
    first = servers(tmp_path)
    status, _, fresh = first.evaluate(seen)
    assert status == 200 and fresh["stale"] is False
    state = tmp_path / "serving"
    wait_for(lambda: list(state.glob("*/apikeys.json")), timeout=10)
    assert list(state.glob("*/ruleset-production.json"))
    first.stop()
    # and a valid key created since, which no process has seen
    unseen = run_script(NEW_KEY, outage_db["direct"])
    # When: the database freezes and a new process starts
    proxy.freeze()
    second = servers(tmp_path)
    (status, _, stale), elapsed = timed(lambda: second.evaluate(seen))
    # Then: it answers at once from disk, with the same answers, marked stale
    assert status == 200, stale
    assert stale["stale"] is True
    assert stale["flags"] == fresh["flags"]
    assert stale["version"] == fresh["version"]
    assert elapsed < CONNECT_TIMEOUT + 3
    status, _, again = second.evaluate(seen)
    assert status == 200 and again["stale"] is True
    # Then: a valid key it cannot verify is 503 (retry), not 401 (wrong key)
    status, headers, body = second.evaluate(unseen)
    assert status == 503, body
    assert body["code"] == "database_unavailable"
    assert int(headers["Retry-After"]) > 0
    # When: the database is back
    proxy.thaw()
    # Then: the new key works, an unknown key is 401, answers are fresh again
    wait_for(lambda: second.evaluate(unseen)[0] == 200, timeout=20)
    status, headers, body = second.evaluate("cp_srv_not-a-key")
    assert status == 401, body
    assert "Bearer" in headers["WWW-Authenticate"]
    recovered = wait_for(
        lambda: (lambda r: r if r[0] == 200 and not r[2]["stale"] else None)(
            second.evaluate(seen)
        ),
        timeout=20,
    )
    assert recovered[2]["flags"] == fresh["flags"]


def test_evaluation__warm_process_database_frozen__every_request_answered_stale(
    outage_db, servers, tmp_path
):
    # Given: a warm process (key and ruleset in memory)
    server, key = servers(tmp_path), outage_db["server"]
    status, _, fresh = server.evaluate(key)
    assert status == 200 and fresh["stale"] is False
    # When: the database freezes while its background threads are mid-poll
    outage_db["proxy"].freeze()
    answers = []
    deadline = time.monotonic() + READ_TIMEOUT + 5
    while time.monotonic() < deadline:
        answers.append(timed(lambda: server.evaluate(key)))
        time.sleep(0.1)
    # Then: every request answered at once, the same answers, stale soon
    assert all(status == 200 for (status, _, _), _ in answers)
    assert all(body["flags"] == fresh["flags"] for (_, _, body), _ in answers)
    assert max(elapsed for _, elapsed in answers) < 1
    assert all(body["stale"] for (_, _, body), _ in answers[-10:])
