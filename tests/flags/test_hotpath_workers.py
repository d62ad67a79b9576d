"""Counters stay right with several worker processes (prometheus multiprocess).

A real server with 2 worker processes on 127.0.0.1 (granian, the production
server, and gunicorn), its own SQLite database built through the services,
and ``PROMETHEUS_MULTIPROC_DIR`` set: N evaluations spread over both
workers, then every scrape of ``/metrics`` (whichever worker answers it)
shows all N.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
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
flag = services.flag_create(actor=SYSTEM, key="sequential_workflow")
services.flag_state_set_enabled(actor=SYSTEM, flag=flag, environment=env, enabled=True)
_, raw = apikey_create(actor=SYSTEM, name="workers", scope="server", environment=env)
print(json.dumps({"key": raw}))
"""
REQUESTS = 120


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _command(server: str, port: int) -> list[str]:
    if server == "granian":
        return [
            str(Path(sys.executable).with_name("granian")),
            "--interface=wsgi",
            "--host=127.0.0.1",
            f"--port={port}",
            "--workers=2",
            "--no-ws",
            "--log-level=warning",
            "controlplane.wsgi:application",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "controlplane.wsgi:application",
        f"--bind=127.0.0.1:{port}",
        "--workers=2",
        "--log-level=warning",
    ]


@pytest.fixture(params=["granian", "gunicorn"])
def two_workers(request, tmp_path):
    """A server with 2 workers; yields (port, server key)."""
    metrics_dir = tmp_path / "prometheus"
    metrics_dir.mkdir()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.sqlite3'}",
        "CONTROLPLANE_VAR_DIR": str(tmp_path),
        "DEBUG": "false",
        "SECRET_KEY": "workers-test",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
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
    port = _free_port()
    process = subprocess.Popen(
        _command(request.param, port),
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if _get(port, "/metrics")[0] == 200:
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{request.param} did not start: {process.stderr.read()}")
            time.sleep(0.2)
        yield port, key
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _get(port: int, path: str) -> tuple[int, str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def _evaluate(port: int, key: str) -> str:
    """Evaluate on a new connection; return the X-Request-ID made up."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request(
            "POST",
            "/api/v1/evaluate",
            body=json.dumps({"context": {"merchant": "m-1"}}),
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
            },
        )
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        assert response.getheader("X-Served-By") == "hotpath"
        return response.getheader("X-Request-ID")
    finally:
        connection.close()


def _sample(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if re.match(rf"{name}(\{{[^}}]*\}})? ", line):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics__two_workers_multiprocess__every_scrape_sums_every_worker(
    two_workers,
):
    # Given
    port, key = two_workers
    # When: evaluations on 8 connections at once, in batches until both
    # workers have answered (a loaded machine may give one worker a whole
    # batch), each on its own connection
    request_ids: list[str] = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        while len(request_ids) < 10 * REQUESTS:
            request_ids += pool.map(lambda _: _evaluate(port, key), range(REQUESTS))
            if len({request_id[:20] for request_id in request_ids}) == 2:
                break
    sent = len(request_ids)
    # Then: both processes answered (a made-up request id starts with its
    # process's prefix)
    assert len({request_id[:20] for request_id in request_ids}) == 2
    # ... and after one flush interval every scrape counts all of them
    deadline = time.monotonic() + 10
    counted = timed = 0.0
    while time.monotonic() < deadline:
        text = _get(port, "/metrics")[1]
        counted = _sample(text, "controlplane_flags_evaluations_total")
        timed = _sample(text, "controlplane_flags_evaluation_seconds_count")
        if counted >= sent and timed >= sent:
            break
        time.sleep(0.2)
    assert (counted, timed) == (sent, sent)
    for _ in range(6):
        text = _get(port, "/metrics")[1]
        assert _sample(text, "controlplane_flags_evaluations_total") == sent
        assert _sample(text, "controlplane_flags_evaluation_seconds_count") == sent
        assert _sample(text, "controlplane_flags_hotpath_requests_total") == sent
