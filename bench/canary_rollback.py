"""Canary rollback benchmark: time from the first failing measurement to the
flag serving its rolled-back value in every serving process.

Starts a real Celery worker and beat (Redis, default tick 2 s) and two
gunicorn serving processes (production settings, PostgreSQL, LISTEN/NOTIFY).
For each run: a fresh flag (off), a rollout whose only phase serves it to
100% for an hour, and an ``outcomes`` error-rate check (< 5%, interval 1 s,
``--failure-limit``, on_failure rollback level 1). Healthy outcome events
are reported until the check has passed and both processes answer ``true``;
then the treatment's events turn to failures. The controller fails the
check after ``failure_limit + 1`` failing measurements, starts a level-1
rollback run, the worker restores the captured state (flag off).

Measured per run: from the first failing CheckRun's ``measured_at`` to the
moment the slower of the two processes first answers ``false`` through
``POST /api/v1/evaluate``. Prints p50 and max. Target: <= 5 s.

    .venv/bin/python bench/canary_rollback.py --runs 5 --failure-limit 1
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _serving  # noqa: E402
from bench.canary_gate import (  # noqa: E402
    DEFAULT_BROKER,
    DEFAULT_DATABASE,
    Stack,
    first_answer,
    fresh_flag,
    setup,
    summary,
    wait_for,
)

TARGET_ROLLBACK_SECONDS = 5.0


def _report(environment: Any, flag_key: str, *, failing: bool, count: int = 50) -> None:
    from canary.services.outcomes import outcome_events_ingest

    events = [
        {
            "flag": flag_key,
            "merchant": f"m-{i:03d}",
            "variation": "on",
            "outcome": "failure" if failing else "success",
            "duration_ms": 25.0,
        }
        for i in range(count)
    ]
    outcome_events_ingest(events=events, environment=environment)


def run_once(environment: Any, key: str, ports: list[int], failure_limit: int) -> dict:
    from canary import services
    from canary.models import CheckRun, Rollout
    from controlplane.audit.actors import SYSTEM

    flag = fresh_flag("rollback-bench")
    rollout = services.rollout_create(
        actor=SYSTEM,
        flag=flag,
        environment=environment,
        name=f"bench {flag.key}",
        phases=[{"name": "all", "percentage": 100, "min_duration": 3600}],
        checks=[
            {
                "name": "error_rate",
                "provider": "outcomes",
                "spec": {"metric": "error_rate"},
                "comparator": "lt",
                "threshold": 0.05,
                "interval": 1,
                "min_samples": 1,
                "failure_limit": failure_limit,
                "inconclusive_limit": 1000,
                "on_failure": "rollback_1",
            }
        ],
    )
    rollout = services.rollout_start(rollout_id=rollout.pk, actor=SYSTEM)
    stop = threading.Event()

    def healthy_app() -> None:
        from django.db import connection

        try:
            while not stop.is_set():
                _report(environment, flag.key, failing=False, count=20)
                stop.wait(0.2)
        finally:
            connection.close()

    app = threading.Thread(target=healthy_app, daemon=True)
    app.start()
    try:
        wait_for(
            lambda: CheckRun.objects.filter(rollout=rollout, verdict="pass").exists(),
            15,
            "a passing measurement",
        )
        if None in first_answer(ports, key, flag.key, "m-any", True, timeout=10):
            raise RuntimeError("the rollout's 100% phase never became live")
    finally:
        stop.set()
        app.join(timeout=5)
    # The regression: from now on the treatment fails.
    injected = time.time()
    _report(environment, flag.key, failing=True, count=500)
    seen = first_answer(ports, key, flag.key, "m-any", False, timeout=30)
    if None in seen:
        raise RuntimeError(f"{flag.key}: not rolled back in every process within 30 s")
    first_fail = (
        CheckRun.objects.filter(rollout=rollout, verdict="fail")
        .order_by("measured_at")
        .values_list("measured_at", flat=True)
        .first()
    )
    wait_for(
        lambda: Rollout.objects.get(pk=rollout.pk).status == "rolled_back",
        15,
        "rolled_back",
    )
    done = max(seen)  # type: ignore[type-var]
    return {
        "fail_to_served": done - first_fail.timestamp(),
        "inject_to_fail": first_fail.timestamp() - injected,
        "inject_to_served": done - injected,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE)
    )
    parser.add_argument("--broker-url", default=DEFAULT_BROKER)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--failure-limit", type=int, default=1)
    parser.add_argument("--servers", type=int, default=2)
    args = parser.parse_args()
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL")
    environment, key = setup(args.database_url, args.broker_url)
    from controlplane.conf import setting

    stack = Stack(args.database_url, args.broker_url, servers=args.servers)
    results: list[dict] = []
    try:
        stack.start()
        for _ in range(args.runs):
            results.append(run_once(environment, key, stack.ports, args.failure_limit))
    finally:
        stack.stop()
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  first failing measurement "
        f"-> rolled-back value served by all {args.servers} processes; failure_limit "
        f"{args.failure_limit}, check interval 1 s, tick {setting('CANARY_TICK_SECONDS'):g} s"
    )
    print(
        summary(
            "fail->served",
            [r["fail_to_served"] for r in results],
            TARGET_ROLLBACK_SECONDS,
        )
    )
    inject = [r["inject_to_served"] for r in results]
    print(
        f"(regression injected -> served: p50 {_serving.percentile(inject, 50) * 1000:.0f} ms,"
        f" max {max(inject) * 1000:.0f} ms; includes waiting for the check's next "
        "measurement)"
    )
    print(
        "runs (ms): " + ", ".join(f"{r['fail_to_served'] * 1000:.0f}" for r in results)
    )


if __name__ == "__main__":
    main()
