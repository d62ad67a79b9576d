"""Helpers shared by the serving benchmarks (http_eval, propagation).

Not a benchmark itself: database set-up through the services, gunicorn
processes on free ports, small HTTP helpers.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = (
    str(ROOT / ".venv" / "bin" / "python")
    if (ROOT / ".venv").exists()
    else sys.executable
)


def need(program: str, hint: str) -> str:
    """Return the path of ``program`` or exit with what to install."""
    path = shutil.which(program) or (
        str(ROOT / ".venv" / "bin" / program)
        if (ROOT / ".venv" / "bin" / program).exists()
        else None
    )
    if path is None:
        sys.exit(f"this benchmark needs {program!r}: {hint}")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ensure_database(url: str) -> None:
    """Create the benchmark's PostgreSQL database when it does not exist."""
    from urllib.parse import urlparse

    import psycopg

    parts = urlparse(url)
    name = parts.path.lstrip("/")
    admin = dict(
        host=parts.hostname or "127.0.0.1",
        port=parts.port or 5432,
        user=parts.username or "postgres",
        password=parts.password or None,
    )
    with psycopg.connect(
        dbname="postgres", autocommit=True, connect_timeout=5, **admin
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    """Configure Django in this process on ``url`` with production settings."""
    os.environ["DATABASE_URL"] = url
    os.environ["DJANGO_SETTINGS_MODULE"] = "controlplane.settings"
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


def bench_environment(key: str, flag_count: int) -> tuple[object, list[object], str]:
    """Return (environment, flags, raw server key), creating what is missing."""
    from controlplane.apikeys.services import apikey_create
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Flag, Merchant

    environment = Environment.objects.filter(
        key=key
    ).first() or services.environment_create(actor=SYSTEM, key=key, name=key)
    if not Merchant.objects.filter(key="m-42").exists():
        services.merchant_create(actor=SYSTEM, key="m-42", attributes={"tier": "gold"})
    flags = []
    for index in range(flag_count):
        flag_key = f"bench-{index:02d}"
        flag = Flag.objects.filter(key=flag_key).first()
        if flag is None:
            flag = services.flag_create(actor=SYSTEM, key=flag_key, name=flag_key)
        flags.append(flag)
        if not flag.states.get(environment=environment).enabled:
            services.flag_state_set_enabled(
                actor=SYSTEM, flag=flag, environment=environment, enabled=True
            )
            services.flag_state_set_percentage(
                actor=SYSTEM,
                flag=flag,
                environment=environment,
                percentage=10 * (index % 10),
            )
    _, raw = apikey_create(
        actor=SYSTEM,
        name=f"bench-{int(time.time())}",
        scope="server",
        environment=environment,
    )
    return environment, flags, raw


def start_gunicorn(
    url: str,
    port: int,
    workers: int,
    app: str = "controlplane.wsgi:application",
    extra_env: dict | None = None,
) -> subprocess.Popen:
    """Start gunicorn on 127.0.0.1:port with production settings; wait until it answers."""
    gunicorn = need("gunicorn", "pip install gunicorn (pinned in requirements.txt)")
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "DJANGO_SETTINGS_MODULE": "controlplane.settings",
        "DEBUG": "false",
        "SECRET_KEY": "bench-only-secret",
        "ALLOWED_HOSTS": "127.0.0.1",
        "LOG_LEVEL": "WARNING",
        **(extra_env or {}),
    }
    process = subprocess.Popen(
        [
            gunicorn,
            app,
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            str(workers),
            "--worker-class",
            "sync",
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"gunicorn exited: {process.stderr.read()[-2000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=1).read()
            return process
        except Exception:
            time.sleep(0.2)
    process.kill()
    sys.exit("gunicorn did not answer within 30 s")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=5)


def post_json(port: int, path: str, body: dict, key: str, timeout: float = 5.0) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method="POST",
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
