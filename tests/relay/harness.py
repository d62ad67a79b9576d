"""Real processes on loopback for the relay tests and the benchmark.

``ControlPlane`` runs ``granian --interface asgi controlplane.asgi:application``
on a database of its own (a fresh PostgreSQL database when ``DATABASE_URL``
is PostgreSQL, else a SQLite file), migrated and seeded through the
services: environment ``production``, bool flag ``sw`` serving ``off``, a
server key and a management key. ``Relay`` runs ``manage.py relay`` with
``DATABASE_URL`` pointing at a server that does not exist.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
NO_DATABASE = "postgres://nobody@127.0.0.1:9/unreachable"

SEED = r"""
import json, django
django.setup()
from django.contrib.auth import get_user_model
from controlplane.audit.actors import SYSTEM
from controlplane.apikeys.services import apikey_create
from flags import services
env = services.environment_create(actor=SYSTEM, key="production", name="Production")
flag = services.flag_create(actor=SYSTEM, key="sw", name="sw")
services.flag_state_set_enabled(actor=SYSTEM, flag=flag, environment=env, enabled=True)
services.flag_state_serve(actor=SYSTEM, flag=flag, environment=env, variation="off")
_, server = apikey_create(actor=SYSTEM, name="relay", scope="server", environment=env)
_, client = apikey_create(actor=SYSTEM, name="app", scope="server", environment=env)
user = get_user_model().objects.create_superuser("ops", "ops@example.com", "x")
_, manage = apikey_create(actor=SYSTEM, name="ops", scope="management", user=user)
print(json.dumps({"server": server, "client": client, "manage": manage}))
"""


def free_port() -> int:
    """Return a TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _env(database_url: str, **extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTEST", "DJANGO_SETTINGS"))
    }
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="controlplane.settings",
        PYTHONPATH=str(ROOT),
        **extra,
    )
    return env


def http(
    method: str,
    url: str,
    key: str | None = None,
    body: Any = None,
    headers: dict | None = None,
    timeout: float = 5.0,
) -> tuple[int, dict, Any]:
    """Return ``(status, headers, JSON body or None)``; never raises for a status."""
    data = json.dumps(body).encode() if body is not None else None
    request_headers = {"Content-Type": "application/json", **(headers or {})}
    if key:
        request_headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        url, data=data, headers=request_headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, got, raw = response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        status, got, raw = exc.code, dict(exc.headers), exc.read()
    try:
        return status, got, json.loads(raw) if raw else None
    except ValueError:
        return status, got, None


class ControlPlane:
    """The upstream: granian ASGI on its own database."""

    def __init__(self, tmp: Path) -> None:
        url = os.environ.get("DATABASE_URL", "")
        if url.startswith("postgres"):
            import dj_database_url
            import psycopg

            params = dj_database_url.parse(url)
            self.db_name = f"cp_relay_up_{os.getpid()}"
            self._admin = {
                "host": params["HOST"] or "127.0.0.1",
                "port": params["PORT"] or 5432,
                "user": params["USER"],
                "password": params["PASSWORD"] or None,
            }
            with psycopg.connect(
                dbname="postgres", autocommit=True, **self._admin
            ) as c:
                c.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")
                c.execute(f"CREATE DATABASE {self.db_name}")
            base = url.rsplit("/", 1)[0]
            self.database_url = f"{base}/{self.db_name}"
        else:
            self.db_name = None
            self.database_url = f"sqlite:///{tmp / 'upstream.sqlite3'}"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log = open(tmp / "upstream.log", "ab")
        env = _env(self.database_url)
        subprocess.run(
            [PYTHON, "manage.py", "migrate", "-v0"], cwd=ROOT, env=env, check=True
        )
        seeded = subprocess.run(
            [PYTHON, "-c", SEED],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        self.keys = json.loads(seeded.stdout.strip().splitlines()[-1])

    def start(self) -> None:
        """Start serving; return once the ruleset endpoint answers."""
        self.process = subprocess.Popen(
            [
                PYTHON,
                "-m",
                "granian",
                "--interface",
                "asgi",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--no-ws",
                "controlplane.asgi:application",
            ],
            cwd=ROOT,
            env=_env(self.database_url),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its workers are stopped with it
        )
        wait_until(
            lambda: self.ruleset_status() == 200, 30, "the control plane to answer"
        )

    def ruleset_status(self) -> int | None:
        try:
            status, _h, _b = http(
                "GET",
                f"{self.url}/api/v1/environments/production/ruleset",
                self.keys["server"],
                timeout=1,
            )
        except OSError:
            return None
        return status

    def stop(self) -> None:
        """Stop serving (the database stays)."""
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def serve(self, variation: str) -> None:
        """Change what flag ``sw`` serves, through the management API."""
        status, _h, body = http(
            "POST",
            f"{self.url}/api/v1/flags/sw/environments/production/serve",
            self.keys["manage"],
            {"variation": variation},
        )
        assert status == 200, body

    def count_events(self) -> tuple[int, int]:
        """Return (rows, distinct event ids) of the outcome events stored."""
        query = "SELECT COUNT(*), COUNT(DISTINCT event_id) FROM canary_outcomeevent"
        if self.db_name is None:
            import sqlite3

            path = self.database_url.removeprefix("sqlite:///")
            with sqlite3.connect(path) as conn:
                return tuple(conn.execute(query).fetchone())
        import psycopg

        with psycopg.connect(dbname=self.db_name, **self._admin) as conn:
            return tuple(conn.execute(query).fetchone())

    def close(self) -> None:
        self.stop()
        self._log.close()
        if self.db_name is not None:
            import psycopg

            with psycopg.connect(
                dbname="postgres", autocommit=True, **self._admin
            ) as c:
                c.execute(f"DROP DATABASE IF EXISTS {self.db_name} WITH (FORCE)")


class Relay:
    """``manage.py relay`` as a process, with no database."""

    def __init__(self, upstream: ControlPlane, data_dir: Path) -> None:
        self.upstream = upstream
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log = open(data_dir.parent / f"relay-{self.port}.log", "ab")

    def start(self, *, wait_version: bool = True) -> None:
        self.process = subprocess.Popen(
            [
                PYTHON,
                "manage.py",
                "relay",
                "--upstream",
                self.upstream.url,
                "--key",
                self.upstream.keys["server"],
                "--port",
                str(self.port),
                "--data-dir",
                str(self.data_dir),
            ],
            cwd=ROOT,
            env=_env(NO_DATABASE),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(lambda: self.health() is not None, 30, "the relay to listen")
        if wait_version:
            wait_until(
                lambda: (self.health() or {}).get("version") is not None,
                30,
                "the relay to hold a ruleset",
            )

    def health(self) -> dict | None:
        try:
            status, _h, body = http("GET", f"{self.url}/healthz", timeout=1)
        except OSError:
            return None
        return body if status == 200 else None

    def evaluate(self, key: str | None = None) -> tuple[int, dict]:
        status, _h, body = http(
            "POST",
            f"{self.url}/api/v1/evaluate",
            key or self.upstream.keys["client"],
            {"context": {"merchant": "m-1"}, "flags": ["sw"]},
        )
        return status, body

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None

    def close(self) -> None:
        self.stop()
        self._log.close()


def stop_process(process: subprocess.Popen, grace: float = 3.0) -> None:
    """Stop a process this module started, with its own children.

    Each runs in a session of its own, so its process group is exactly it
    and its workers. Open streams keep a server from ending gracefully: after
    ``grace`` seconds the group is killed.
    """
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(5)


def wait_until(condition: Any, timeout: float, what: str) -> None:
    """Wait for ``condition()`` to be true; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
