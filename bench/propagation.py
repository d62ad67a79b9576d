"""Propagation benchmark: time from a committed change to every process answering it.

Starts N serving processes (one gunicorn worker each, own port, production
settings on PostgreSQL), then makes C changes to one flag through the service
layer (alternating the served variation) and, after each commit, polls every
process until it answers the new value. Prints p50/p99/max of the time until
the slowest process answered. Target: p99 <= 1 s.

Then the same with the control plane on granian ASGI (the stream's server),
``--relays`` relays following it and ``--clients`` flags.client clients
following its stream (bench/_propagation_relays.py): p50/p99 until every
relay, and every client, answers the change.

Needs gunicorn (venv) and PostgreSQL (``--database-url``; created and
migrated if missing). ``--redis-url`` switches notification to Redis pub/sub.

    .venv/bin/python bench/propagation.py --processes 3 --relays 2 --clients 2 --changes 50
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def first_seen(
    port: int, key: str, want: bool, deadline: float, out: dict, name: int
) -> None:
    """Poll one process until it answers ``want``; record the monotonic time."""
    body = json.dumps(
        {"context": {"merchant": "m-42"}, "flags": ["propagation"]}
    ).encode()
    while time.monotonic() < deadline:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/api/v1/evaluate",
            method="POST",
            data=body,
            headers={
                "Authorization": f"Bearer {key}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=2) as response:
                answer = json.loads(response.read())["flags"][0]["value"]
        except Exception:
            answer = None
        if answer is want:
            out[name] = time.monotonic()
            return
        time.sleep(0.002)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cp_serve_bench"
        ),
    )
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--changes", type=int, default=50)
    parser.add_argument("--relays", type=int, default=2)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--redis-url", default="", help="notify through Redis pub/sub")
    parser.add_argument(
        "--poll-interval",
        type=float,
        default=None,
        help="override RULESET_POLL_INTERVAL in the servers (seconds)",
    )
    args = parser.parse_args()

    from bench import _serving

    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL")
    _serving.ensure_database(args.database_url)
    _serving.setup_django(args.database_url)
    from django.conf import settings

    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Flag

    environment, _flags, key = _serving.bench_environment("bench", 20)
    flag = Flag.objects.filter(key="propagation").first() or services.flag_create(
        actor=SYSTEM, key="propagation", name="propagation"
    )
    services.flag_state_set_enabled(
        actor=SYSTEM, flag=flag, environment=environment, enabled=True
    )
    services.flag_state_serve(
        actor=SYSTEM, flag=flag, environment=environment, variation="off"
    )
    if args.redis_url:
        settings.CONTROLPLANE = {
            **settings.CONTROLPLANE,
            "RULESET_REDIS_URL": args.redis_url,
        }

    # the servers read CONTROLPLANE overrides from this JSON (bench only)
    overrides = {}
    if args.redis_url:
        overrides["RULESET_REDIS_URL"] = args.redis_url
    if args.poll_interval is not None:
        overrides["RULESET_POLL_INTERVAL"] = args.poll_interval
    app = "bench.propagation:application"
    servers = []
    ports = []
    try:
        for _ in range(args.processes):
            port = _serving.free_port()
            servers.append(
                _serving.start_gunicorn(
                    args.database_url,
                    port,
                    1,
                    app=app,
                    extra_env={"BENCH_CONTROLPLANE": json.dumps(overrides)},
                )
            )
            ports.append(port)
        for port in ports:  # warm: key cache, ruleset, background thread
            _serving.post_json(
                port,
                "/api/v1/evaluate",
                {"context": {"merchant": "m-42"}, "flags": ["propagation"]},
                key,
            )
        time.sleep(1.0)
        delays = []
        value = False
        for _change in range(args.changes):
            value = not value
            services.flag_state_serve(
                actor=SYSTEM,
                flag=flag,
                environment=environment,
                variation="on" if value else "off",
            )
            committed = time.monotonic()
            seen: dict[int, float] = {}
            threads = [
                threading.Thread(
                    target=first_seen,
                    args=(port, key, value, committed + 10, seen, index),
                )
                for index, port in enumerate(ports)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len(seen) < len(ports):
                delays.append(float("inf"))
            else:
                delays.append(max(seen.values()) - committed)
            time.sleep(0.05)
    finally:
        for server in servers:
            _serving.stop(server)

    finite = [d for d in delays if d != float("inf")]
    how = "Redis pub/sub" if args.redis_url else "PostgreSQL LISTEN/NOTIFY"
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {args.processes} processes, "
        f"{args.changes} changes, {how} + version poll"
    )
    print(
        f"until every process answers: p50 {1000 * _serving.percentile(delays, 50):.0f} ms, "
        f"p99 {1000 * _serving.percentile(delays, 99):.0f} ms, "
        f"max {1000 * max(delays):.0f} ms, missed (>10 s) {len(delays) - len(finite)}"
    )
    p99 = _serving.percentile(delays, 99)
    print(f"target (p99 <= 1 s): {'met' if p99 <= 1.0 else 'NOT met'}")
    if args.relays or args.clients:
        _relays_and_clients(args, key, flag, environment)


def _relays_and_clients(args, key, flag, environment) -> None:
    from bench import _propagation_relays, _serving
    from controlplane.audit.actors import SYSTEM
    from flags import services

    def change(value: bool) -> None:
        services.flag_state_serve(
            actor=SYSTEM,
            flag=flag,
            environment=environment,
            variation="on" if value else "off",
        )

    delays = _propagation_relays.measure(
        database_url=args.database_url,
        key=key,
        relays=args.relays,
        clients=args.clients,
        changes=args.changes,
        change=change,
    )
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  control plane on"
        f" granian ASGI, {args.changes} changes"
    )
    _propagation_relays.report(delays, args.relays, args.clients)
    worst = max(
        (_serving.percentile(values, 99) for values in delays.values() if values),
        default=0.0,
    )
    print(f"target (p99 <= 1 s): {'met' if worst <= 1.0 else 'NOT met'}")


_application = None


def application(environ, start_response):
    """WSGI app: the project, with CONTROLPLANE overrides from BENCH_CONTROLPLANE."""
    global _application
    if _application is None:
        from django.conf import settings
        from django.core.wsgi import get_wsgi_application

        app = get_wsgi_application()
        overrides = json.loads(os.environ.get("BENCH_CONTROLPLANE") or "{}")
        settings.CONTROLPLANE = {**settings.CONTROLPLANE, **overrides}
        _application = app
    return _application(environ, start_response)


if __name__ == "__main__":
    main()
