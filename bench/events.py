"""Benchmark outcome-event ingestion: the service, and POST /api/v1/events
over real HTTP to gunicorn.

Run: ``.venv/bin/python bench/events.py`` (fresh SQLite in a temp dir), or
``DATABASE_URL=postgres://postgres@127.0.0.1:5432/cp_prov .venv/bin/python
bench/events.py`` (migrates that database; creates it if absent).

Sends ``--events`` events in batches of ``--batch`` from ``--clients``
threads to ``--workers`` gunicorn sync workers with a server key, and
reports events/s measured by the client (JSON encoding, HTTP, parsing,
validation and the bulk insert included). Target: >= 5,000 events/s.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 5000.0


def _events(count: int, offset: int) -> list[dict]:
    now = datetime.now(UTC)
    return [
        {
            "flag": "sequential_workflow",
            "merchant": f"merchant-{(offset + i) % 500}",
            "variation": "on" if (offset + i) % 10 == 0 else "off",
            "outcome": "failure" if (offset + i) % 50 == 0 else "success",
            "duration_ms": 20.0 + (offset + i) % 180,
            "occurred_at": (now - timedelta(milliseconds=i)).isoformat(),
            "name": "checkout",
        }
        for i in range(count)
    ]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ensure_postgres_database(url: str) -> None:
    from urllib.parse import urlsplit

    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def _setup() -> tuple[str, str]:
    """Migrate, ensure the environment and a server key; return (key, db)."""
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", verbosity=0)
    from controlplane.apikeys.services import apikey_create
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment

    environment = Environment.objects.filter(key="production").first()
    if environment is None:
        environment = services.environment_create(
            actor=SYSTEM, key="production", name="Production"
        )
    _key, raw = apikey_create(
        actor=SYSTEM,
        name=f"bench-{time.time_ns()}",
        scope="server",
        environment=environment,
    )
    return raw, connection.vendor


def bench_service(total: int, batch: int) -> float:
    """Return events/s of ``outcome_events_ingest`` called in process."""
    from canary.services.outcomes import outcome_events_ingest

    batches = [_events(batch, i * batch) for i in range(max(1, total // batch))]
    started = time.perf_counter()
    stored = sum(
        outcome_events_ingest(environment="production", events=b) for b in batches
    )
    return stored / (time.perf_counter() - started)


def bench_http(
    total: int, batch: int, clients: int, workers: int, key: str, env: dict
) -> tuple[float, float]:
    """Return (events/s, median ms per batch) through gunicorn."""
    port = _free_port()
    server = subprocess.Popen(
        [
            str(ROOT / ".venv/bin/gunicorn"),
            "controlplane.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("gunicorn did not start")
                time.sleep(0.1)
        n_batches = max(1, total // batch)
        bodies = [
            json.dumps({"events": _events(batch, i * batch)}).encode()
            for i in range(n_batches)
        ]
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        # warm up: the first request loads the app and caches the key
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request(
            "POST",
            "/api/v1/events",
            body=json.dumps({"events": _events(10, 0)}),
            headers=headers,
        )
        warm = conn.getresponse()
        if warm.status != 202:
            raise SystemExit(
                f"warm-up failed: HTTP {warm.status} {warm.read()[:300]!r}"
            )
        warm.read()
        conn.close()
        latencies: list[float] = []
        accepted = [0]
        lock = threading.Lock()
        queue = list(bodies)

        def client() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    body = queue.pop()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                started = time.perf_counter()
                conn.request("POST", "/api/v1/events", body=body, headers=headers)
                response = conn.getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - started
                conn.close()
                if response.status != 202:
                    raise SystemExit(f"HTTP {response.status}: {payload[:300]!r}")
                with lock:
                    latencies.append(elapsed * 1000)
                    accepted[0] += json.loads(payload)["accepted"]

        threads = [threading.Thread(target=client) for _ in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - started
        latencies.sort()
        return accepted[0] / wall, latencies[len(latencies) // 2]
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.batch <= 5000:
        parser.error("--batch must be within 1..5000 (the endpoint's limit)")

    env = dict(os.environ)
    env.setdefault("SECRET_KEY", "bench-only-secret")
    env["DEBUG"] = "false"
    env["ALLOWED_HOSTS"] = "127.0.0.1,localhost"
    env["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    tmp = None
    if env.get("DATABASE_URL"):
        _ensure_postgres_database(env["DATABASE_URL"])
    else:
        tmp = tempfile.mkdtemp(prefix="cp-bench-events-")
        env["CONTROLPLANE_VAR_DIR"] = tmp
    os.environ.update(env)
    key, vendor = _setup()

    service_rate = bench_service(args.events, args.batch)
    http_rate, median_ms = bench_http(
        args.events, args.batch, args.clients, args.workers, key, env
    )
    print(
        f"outcome events: {vendor}, python {platform.python_version()},"
        f" {os.cpu_count()} CPUs, {args.events} events in batches of {args.batch}"
    )
    print(f"  service (in process):          {service_rate:10,.0f} events/s")
    print(
        f"  HTTP POST /api/v1/events:      {http_rate:10,.0f} events/s"
        f"  ({args.clients} clients, {args.workers} gunicorn workers,"
        f" median {median_ms:.0f} ms per batch)"
    )
    verdict = "OK" if http_rate >= TARGET else "BELOW TARGET"
    print(f"  target >= {TARGET:,.0f} events/s over HTTP: {verdict}")
    if tmp:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if http_rate >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
