"""A real gunicorn serving the project on 127.0.0.1, for bad-input tests.

Bad input is sent to a separate process, never through the test process: a
lone surrogate that reaches mmh3 kills the process that hashes it, so a
regression must show as a failed request (and a crashed worker in the log),
not as a crashed test run. gunicorn also reads chunked bodies and says so
(``wsgi.input_terminated``), which Django's test client and live server
cannot show.

The server has its own SQLite database, built by ``manage.py migrate`` and
the services in a setup process, so it shares nothing with the test
database; tests read its rows with ``sqlite3``.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Data of the serving process, created through the services: every way the
# engine hashes or matches a context string (merchant split, clause over an
# attribute, split bucketed by another attribute).
SEED = r"""
import json
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from controlplane.audit.actors import SYSTEM
from controlplane.apikeys.services import apikey_create
from flags import services
env = services.environment_create(actor=SYSTEM, key="production", name="Production")
services.merchant_create(actor=SYSTEM, key="m-gold", attributes={"tier": "gold"})
workflow = services.flag_create(actor=SYSTEM, key="sequential_workflow")
services.flag_state_set_enabled(actor=SYSTEM, flag=workflow, environment=env, enabled=True)
services.flag_state_set_percentage(
    actor=SYSTEM, flag=workflow, environment=env, percentage=50
)
theme = services.flag_create(
    actor=SYSTEM,
    key="checkout_theme",
    value_type="string",
    variations=[{"key": "classic", "value": "classic"}, {"key": "dark", "value": "dark"}],
)
services.flag_state_set_enabled(actor=SYSTEM, flag=theme, environment=env, enabled=True)
services.flag_state_update(
    actor=SYSTEM,
    flag=theme,
    environment=env,
    expected_version=None,
    rules=[
        {
            "clauses": [{"attribute": "tier", "op": "starts_with", "values": ["go"]}],
            "serve": {"variation": "dark"},
        },
        {
            "clauses": [{"attribute": "plan", "op": "in", "values": ["pro"]}],
            "serve": {
                "split": [
                    {"variation": "dark", "weight": 50000},
                    {"variation": "classic", "weight": 50000},
                ]
            },
        },
    ],
)
services.flag_state_serve(actor=SYSTEM, flag=theme, environment=env, variation="classic")
account = services.flag_create(actor=SYSTEM, key="by_account")
services.flag_state_set_enabled(actor=SYSTEM, flag=account, environment=env, enabled=True)
services.flag_state_update(
    actor=SYSTEM, flag=account, environment=env, expected_version=None, bucket_by="account"
)
services.flag_state_set_percentage(actor=SYSTEM, flag=account, environment=env, percentage=50)
_, raw = apikey_create(actor=SYSTEM, name="bad-input", scope="server", environment=env)
print(json.dumps({"key": raw}))
"""


@dataclass(frozen=True)
class Server:
    """A running gunicorn: where it listens, its key, database and log."""

    host: str
    port: int
    key: str
    database: Path
    log: Path
    env: dict[str, str]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """Send one request with a Content-Length; return status, headers, body."""
        connection = http.client.HTTPConnection(self.host, self.port, timeout=20)
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def raw(self, payload: bytes, *, chunks: list[bytes] = ()) -> bytes:
        """Send raw bytes (then each of ``chunks``); return the raw answer."""
        with socket.create_connection((self.host, self.port), timeout=20) as sock:
            sock.sendall(payload)
            for chunk in chunks:
                try:
                    sock.sendall(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    break  # answered and closed before the end: that is fine
            received = b""
            while True:
                try:
                    part = sock.recv(65536)
                except ConnectionResetError:
                    break
                if not part:
                    break
                received += part
            return received

    def outcome_event_rows(self) -> int:
        """Return how many outcome events the server's database holds."""
        with sqlite3.connect(self.database) as db:
            return db.execute("SELECT COUNT(*) FROM canary_outcomeevent").fetchone()[0]

    def log_size(self) -> int:
        """Return the log's length now, to look only at what follows."""
        return self.log.stat().st_size

    def crashed_workers(self, since: int = 0) -> list[str]:
        """Return the log lines (after ``since``) of workers killed by a signal."""
        with open(self.log, "rb") as log:
            log.seek(since)
            text = log.read().decode(errors="replace")
        return [
            line
            for line in text.splitlines()
            if "was sent" in line or "SIGSEGV" in line
        ]


def _wait_ready(server: Server, process: subprocess.Popen, deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        try:
            status, _, _ = server.request("GET", "/api/v1/evaluate")
            if status == 405:
                return
        except OSError:
            pass
        time.sleep(0.2)
    tail = server.log.read_text(errors="replace")[-3000:]
    pytest.fail(f"gunicorn did not answer within its deadline:\n{tail}")


@pytest.fixture(scope="session")
def gunicorn_server(tmp_path_factory) -> Iterator[Server]:
    """One gunicorn (one sync worker) on a socket bound here, port 0."""
    workdir = tmp_path_factory.mktemp("gunicorn")
    database = workdir / "serve.sqlite3"
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": f"sqlite:///{database}",
        "CONTROLPLANE_VAR_DIR": str(workdir),
        "DEBUG": "false",
        "SECRET_KEY": "bad-input-tests",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
    }
    seeded = subprocess.run(
        [sys.executable, "-c", SEED],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert seeded.returncode == 0, seeded.stderr[-3000:]
    key = json.loads(seeded.stdout.strip().splitlines()[-1])["key"]
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    log = workdir / "gunicorn.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "controlplane.wsgi:application",
                f"--bind=fd://{listener.fileno()}",
                "--workers=1",
                "--timeout=60",
                "--log-level=info",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            pass_fds=[listener.fileno()],
        )
    listener.close()  # the server holds its own copy of the socket
    server = Server("127.0.0.1", port, key, database, log, env)
    try:
        _wait_ready(server, process, time.monotonic() + 90)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
