"""Canary gate benchmark: time from a gate opening to the next phase being
live in the evaluation API.

Starts a real Celery worker and beat (Redis, default tick
``CANARY_TICK_SECONDS`` = 2 s) and one gunicorn serving process, all with
production settings on PostgreSQL. For each run it creates a fresh flag and
a two-phase rollout (pilot merchant, then 100%) with one HTTP health check,
and measures:

* **approval**: the pilot phase requires approval. Once the controller has
  moved the rollout to awaiting_approval, ``rollout_approve`` is called
  here; the time runs from just before that call to the first
  ``POST /api/v1/evaluate`` answering ``true`` for a non-pilot merchant.
* **min_duration**: the pilot phase lasts 3 s; the time runs from
  ``phase_started_at + 3 s`` to the same first ``true`` answer.

Prints p50 and max per scenario. Target: <= 2 s with the default tick.

Needs gunicorn and celery (venv), PostgreSQL and Redis. Uses db 7 of Redis
(flushed) and the database ``cp_ctrl`` (created and migrated if missing).

    .venv/bin/python bench/canary_gate.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _serving  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATABASE = "postgres://postgres@127.0.0.1:5432/cp_ctrl"
DEFAULT_BROKER = "redis://127.0.0.1:6379/7"
ENVIRONMENT = "canary-bench"
TARGET_GATE_SECONDS = 2.0


# Shared with bench/canary_rollback.py ----------------------------------------


class Stack:
    """A Celery worker and beat, and gunicorn serving processes."""

    def __init__(self, database_url: str, broker_url: str, servers: int) -> None:
        self.database_url, self.broker_url, self.server_count = (
            database_url,
            broker_url,
            servers,
        )
        self.workdir = Path(tempfile.mkdtemp(prefix="cp-canary-bench-"))
        self.processes: list[subprocess.Popen] = []
        self.ports: list[int] = []

    def env(self) -> dict:
        return {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "DJANGO_SETTINGS_MODULE": "controlplane.settings",
            "CELERY_BROKER_URL": self.broker_url,
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-secret",
            "LOG_LEVEL": "WARNING",
            "CONTROLPLANE_VAR_DIR": str(self.workdir),
        }

    def _celery(self, args: list[str], name: str) -> subprocess.Popen:
        celery = _serving.need(
            "celery", "pip install celery (pinned in requirements.txt)"
        )
        process = subprocess.Popen(
            [celery, "-A", "controlplane", *args],
            cwd=ROOT,
            env=self.env(),
            stdout=open(self.workdir / f"{name}.log", "wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes.append(process)
        return process

    def _wait_log(self, name: str, text: str, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 60
        log = self.workdir / f"{name}.log"
        while time.monotonic() < deadline and process.poll() is None:
            if text in log.read_text(errors="replace"):
                return
            time.sleep(0.1)
        sys.exit(f"{name} did not start:\n{log.read_text(errors='replace')[-2000:]}")

    def start(self) -> None:
        import redis

        redis.Redis.from_url(self.broker_url).flushdb()
        worker = self._celery(
            [
                "worker",
                "-l",
                "INFO",
                "--concurrency",
                "2",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                "cp-bench@%h",
            ],
            "worker",
        )
        beat = self._celery(
            [
                "beat",
                "-l",
                "INFO",
                "-s",
                str(self.workdir / "beat-schedule"),
                "--pidfile",
                str(self.workdir / "beat.pid"),
            ],
            "beat",
        )
        self._wait_log("worker", "ready.", worker)
        self._wait_log("beat", "beat: Starting", beat)
        for _ in range(self.server_count):
            port = _serving.free_port()
            self.processes.append(_serving.start_gunicorn(self.database_url, port, 1))
            self.ports.append(port)

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is not None:
                continue
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)


def setup(database_url: str, broker_url: str) -> tuple[Any, str]:
    """Configure Django here (tasks go to the broker); return (env, key)."""
    os.environ["CELERY_BROKER_URL"] = broker_url
    _serving.ensure_database(database_url)
    _serving.setup_django(database_url)
    from controlplane.apikeys.services import apikey_create
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Merchant

    environment = Environment.objects.filter(key=ENVIRONMENT).first() or (
        services.environment_create(actor=SYSTEM, key=ENVIRONMENT, name=ENVIRONMENT)
    )
    if not Merchant.objects.filter(key="m-pilot").exists():
        services.merchant_create(actor=SYSTEM, key="m-pilot")
    # Rollouts left in progress by an interrupted run would be ticked too.
    from canary.models import Rollout
    from canary.services import rollout_abort
    from canary.transitions import ACTIVE

    for pk in Rollout.objects.filter(
        environment=environment, status__in=list(ACTIVE)
    ).values_list("pk", flat=True):
        rollout_abort(rollout_id=pk, actor=SYSTEM, reason="benchmark clean-up")
    _, raw = apikey_create(
        actor=SYSTEM,
        name=f"canary-bench-{int(time.time())}",
        scope="server",
        environment=environment,
    )
    return environment, raw


def fresh_flag(prefix: str) -> Any:
    from controlplane.audit.actors import SYSTEM
    from flags import services

    key = f"{prefix}-{int(time.time() * 1000) % 10**10}"
    return services.flag_create(actor=SYSTEM, key=key, name=key)


def evaluate(port: int, key: str, flag_key: str, merchant: str) -> Any:
    body = json.dumps({"context": {"merchant": merchant}, "flags": [flag_key]}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/evaluate",
        method="POST",
        data=body,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return json.loads(response.read())["flags"][0]["value"]
    except Exception:
        return None


def first_answer(
    ports: list[int], key: str, flag_key: str, merchant: str, want: Any, timeout: float
) -> list[float | None]:
    """Poll every serving process until it answers ``want``; return the
    wall-clock time each first did (None if not within ``timeout``)."""
    seen: list[float | None] = [None] * len(ports)

    def poll(index: int, port: int) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if evaluate(port, key, flag_key, merchant) == want:
                seen[index] = time.time()
                return
            time.sleep(0.002)

    threads = [
        threading.Thread(target=poll, args=(i, port)) for i, port in enumerate(ports)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return seen


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise RuntimeError(f"timed out waiting for {what}")


def summary(name: str, values: list[float], target: float) -> str:
    p50 = _serving.percentile(values, 50)
    worst = max(values)
    verdict = "met" if worst <= target else "NOT met"
    return (
        f"{name:<14} runs {len(values):>2}  p50 {p50 * 1000:7.0f} ms  "
        f"max {worst * 1000:7.0f} ms  (target <= {target:g} s: {verdict})"
    )


# The gate benchmark ---------------------------------------------------------


def _rollout(
    environment: Any, flag: Any, health_url: str, *, approval: bool, min_duration: int
) -> Any:
    from canary import services
    from controlplane.audit.actors import SYSTEM

    phases = [
        {
            "name": "pilot",
            "pilot_merchants": ["m-pilot"],
            "requires_approval": approval,
            "min_duration": min_duration,
        },
        {"name": "all", "percentage": 100},
    ]
    checks = [
        {
            "name": "health",
            "provider": "http",
            "spec": {"url": health_url, "measure": "status"},
            "comparator": "eq",
            "threshold": 200,
            "interval": 1,
            "min_samples": 1,
            "timeout": 2.0,
        }
    ]
    rollout = services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=environment,
        name=f"bench {flag.key}",
        phases=phases,
        checks=checks,
    )
    return services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)


def _status(pk: int) -> str:
    from canary.models import Rollout

    return Rollout.objects.values_list("status", flat=True).get(pk=pk)


def run_approval(
    environment: Any, key: str, ports: list[int], health_url: str
) -> float:
    from canary import services
    from controlplane.audit.actors import SYSTEM

    flag = fresh_flag("gate-approval")
    rollout = _rollout(environment, flag, health_url, approval=True, min_duration=0)
    wait_for(
        lambda: _status(rollout.pk) == "awaiting_approval", 15, "awaiting_approval"
    )
    opened = time.time()
    services.rollout_approve(rollout_id=rollout.pk, actor=SYSTEM, reason="bench")
    seen = first_answer(ports, key, flag.key, "m-other", True, timeout=15)
    if None in seen:
        raise RuntimeError(f"{flag.key}: the next phase was not live within 15 s")
    return max(seen) - opened  # type: ignore[operator, type-var]


def run_min_duration(
    environment: Any, key: str, ports: list[int], health_url: str, duration: int
) -> float:
    from canary.models import Rollout

    flag = fresh_flag("gate-duration")
    rollout = _rollout(
        environment, flag, health_url, approval=False, min_duration=duration
    )
    started = Rollout.objects.get(pk=rollout.pk).phase_started_at.timestamp()
    seen = first_answer(ports, key, flag.key, "m-other", True, timeout=duration + 15)
    if None in seen:
        raise RuntimeError(f"{flag.key}: the next phase was not live in time")
    return max(seen) - (started + duration)  # type: ignore[operator, type-var]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--min-duration", type=int, default=3)
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL")
    environment, key = setup(args.database_url, args.broker_url)
    from controlplane.conf import setting

    stack = Stack(args.database_url, args.broker_url, servers=1)
    approval: list[float] = []
    duration: list[float] = []
    try:
        stack.start()
        health_url = f"http://127.0.0.1:{stack.ports[0]}/metrics"
        for _ in range(args.runs):
            approval.append(run_approval(environment, key, stack.ports, health_url))
            duration.append(
                run_min_duration(
                    environment, key, stack.ports, health_url, args.min_duration
                )
            )
    finally:
        stack.stop()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  gate opening -> next "
        f"phase live in POST /api/v1/evaluate; tick {setting('CANARY_TICK_SECONDS'):g} s, "
        f"1 worker (concurrency 2) + beat, 1 gunicorn process, PostgreSQL LISTEN/NOTIFY"
    )
    print(summary("approval", approval, TARGET_GATE_SECONDS))
    print(summary("min_duration", duration, TARGET_GATE_SECONDS))
    print(
        "runs (ms): approval "
        + ", ".join(f"{v * 1000:.0f}" for v in approval)
        + "; min_duration "
        + ", ".join(f"{v * 1000:.0f}" for v in duration)
    )


if __name__ == "__main__":
    main()
