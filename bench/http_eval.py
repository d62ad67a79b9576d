"""HTTP evaluation benchmark: gunicorn and granian, PostgreSQL, wrk.

Measures, in one run on this machine, req/s, p50/p99 latency, non-2xx
answers and SQL statements per request (run by request threads) of every
target in ``TARGETS``, server by server:

- the raw constant ceiling (a raw WSGI callable answering constant JSON)
  and a bare Django view, on each server;
- the project's ``POST /api/v1/evaluate`` (one flag) answered by Django's
  views alone (``/bench/django/...``: what the endpoint cost before the hot
  path), on each server;
- the project's native (1 flag), OFREP single and OFREP bulk (20 flags)
  endpoints through the production entry point (the hot path), on gunicorn
  and on granian, and the native one on granian with counting off.

Then, in this process, the hot path's CPU cost per request with and without
counting (the metrics' share of the path), and the verdict on the targets.

``TARGETS`` and ``SERVERS`` are the hook for more rows (a relay): add a
server start function to ``SERVERS`` and its rows to ``TARGETS``.

Needs ``wrk`` (Debian: ``apt-get install -y wrk``), gunicorn and granian
(requirements.txt), a PostgreSQL server (``--database-url``; the database
is created and migrated if missing). Installs nothing itself.

    .venv/bin/python bench/http_eval.py --duration 5 --rounds 2 --connections 16
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import _http_servers, _serving  # noqa: E402
from bench._http_wrk import run_wrk  # noqa: E402

CONTEXT = {"context": {"merchant": "m-42"}}
SINGLE = {**CONTEXT, "flags": ["bench-05"]}
OFREP = {"context": {"targetingKey": "m-42"}}


@dataclass(frozen=True, eq=False)  # a row is itself (hashed by identity)
class Target:
    """One row: a server kind, what answers, the request."""

    server: str  # a key of SERVERS
    label: str
    path: str
    body: dict | None
    role: str = ""  # raw | bare | django | single | ofrep | bulk (for targets)


SERVERS: dict[str, Callable[[argparse.Namespace], _http_servers.Started]] = {
    "gunicorn": lambda a: _http_servers.start_gunicorn(a.database_url, a.workers),
    "granian": lambda a: _http_servers.start_granian(
        a.database_url, a.workers, a.threads_per_worker
    ),
    "granian, counting off": lambda a: _http_servers.start_granian(
        a.database_url, a.workers, a.threads_per_worker, {"BENCH_NO_COUNTING": "1"}
    ),
    # a relay of a granian control plane: one process, no database
    "relay": lambda a: _http_servers.start_relay(a.database_url, a.key),
}

TARGETS: list[Target] = [
    *(
        row
        for server in ("gunicorn", "granian")
        for row in (
            Target(
                server, "raw WSGI callable, constant JSON", "/bench/raw", SINGLE, "raw"
            ),
            Target(server, "bare Django view", "/bench/bare", SINGLE, "bare"),
            Target(
                server,
                "native, 1 flag, Django views",
                "/bench/django/api/v1/evaluate",
                SINGLE,
                "django",
            ),
            Target(
                server, "native, 1 flag, hot path", "/api/v1/evaluate", SINGLE, "single"
            ),
            Target(
                server,
                "OFREP single, hot path",
                "/ofrep/v1/evaluate/flags/bench-05",
                OFREP,
                "ofrep",
            ),
            Target(
                server,
                "OFREP bulk 20, hot path",
                "/ofrep/v1/evaluate/flags",
                OFREP,
                "bulk",
            ),
        )
    ),
    Target(
        "granian, counting off",
        "native, 1 flag, hot path, no counting",
        "/api/v1/evaluate",
        SINGLE,
        "uncounted",
    ),
    Target("relay", "native, 1 flag, through a relay", "/api/v1/evaluate", SINGLE),
    Target(
        "relay",
        "OFREP single, through a relay",
        "/ofrep/v1/evaluate/flags/bench-05",
        OFREP,
    ),
]


def _queries(port: int) -> float:
    """Return the servers' SQL statements run by request threads so far."""
    try:
        text = urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=5
        ).read()
    except OSError:  # a relay: no /metrics of the bench apps, and no database
        return 0.0
    for line in text.decode().splitlines():
        if line.startswith("bench_request_queries_total "):
            return float(line.split()[1])
    return 0.0


def _measure(args, wrk: str, key: str, server: str, rows: list[Target]) -> dict:
    results: dict[Target, list[dict]] = {row: [] for row in rows}
    started = SERVERS[server](args)
    base = f"http://127.0.0.1:{started.port}"
    try:
        for row in rows:  # warm: keys, rulesets, cached bodies, connections
            run_wrk(
                wrk,
                base + row.path,
                key,
                row.body,
                args.warmup,
                args.connections,
                args.threads,
            )
        for _round in range(args.rounds):
            for row in rows:
                before = _queries(started.port)
                run = run_wrk(
                    wrk,
                    base + row.path,
                    key,
                    row.body,
                    args.duration,
                    args.connections,
                    args.threads,
                )
                time.sleep(0.1)
                run["queries"] = _queries(started.port) - before
                results[row].append(run)
    finally:
        started.stop()
    return {
        row: {
            field: statistics.median(run[field] for run in runs)
            for field in ("rps", "p50_ms", "p99_ms")
        }
        | {
            "non_2xx": sum(run["non_2xx"] for run in runs),
            "per_request": sum(run["queries"] for run in runs)
            / max(1, sum(run["requests"] for run in runs)),
        }
        for row, runs in results.items()
    }


def _print(args, results: dict[Target, dict]) -> None:
    print(
        f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}  {args.workers} workers "
        f"per server, wrk -t{args.threads} -c{args.connections} -d{args.duration}s "
        f"x{args.rounds} rounds (median), {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}, PostgreSQL"
    )
    print(
        f"{'server':22} {'what answers':38} {'req/s':>8} {'p50 ms':>7} "
        f"{'p99 ms':>7} {'non-2xx':>8} {'SQL/req':>8}"
    )
    for row, result in results.items():
        print(
            f"{row.server:22} {row.label:38} {result['rps']:8.0f} "
            f"{result['p50_ms']:7.2f} {result['p99_ms']:7.2f} "
            f"{result['non_2xx']:8d} {result['per_request']:8.4f}"
        )


def _verdict(results: dict[Target, dict]) -> None:
    def find(server: str, role: str) -> dict | None:
        for row, result in results.items():
            if row.server == server and row.role == role:
                return result
        return None

    single = find("granian", "single")
    django = find("gunicorn", "django")
    raw = find("granian", "raw")
    if not (single and django and raw):
        return
    checks = [
        (
            "granian single flag >= 10x gunicorn + Django",
            single["rps"] / django["rps"],
            single["rps"] >= 10 * django["rps"],
            "x",
        ),
        (
            "granian single flag >= 70% of granian's raw ceiling",
            100 * single["rps"] / raw["rps"],
            single["rps"] >= 0.7 * raw["rps"],
            "%",
        ),
        (
            "granian single flag p99 <= 5 ms",
            single["p99_ms"],
            single["p99_ms"] <= 5,
            "ms",
        ),
        (
            "0 SQL per evaluation (hot path rows)",
            max(
                r["per_request"]
                for row, r in results.items()
                if row.role in ("single", "ofrep", "bulk")
            ),
            all(
                r["per_request"] < 0.001
                for row, r in results.items()
                if row.role in ("single", "ofrep", "bulk")
            ),
            "",
        ),
        (
            "0 non-2xx",
            sum(r["non_2xx"] for r in results.values()),
            all(r["non_2xx"] == 0 for r in results.values()),
            "",
        ),
    ]
    print()
    for name, value, met, unit in checks:
        print(f"{name:56} {value:10.4g} {unit:2} {'met' if met else 'NOT met'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/cp_serve_bench"
        ),
    )
    parser.add_argument(
        "--duration", type=int, default=5, help="seconds per row and round"
    )
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds (median)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="seconds of warm-up per row"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--threads-per-worker", type=int, default=1, help="granian")
    parser.add_argument(
        "--only", action="append", default=[], help="servers to run (default: all)"
    )
    args = parser.parse_args()

    wrk = _serving.need("wrk", "install it with `apt-get install -y wrk` (Debian)")
    if not args.database_url.startswith("postgres"):
        sys.exit("--database-url must be a PostgreSQL URL (production settings)")
    _serving.ensure_database(args.database_url)
    _serving.setup_django(args.database_url)
    _environment, _flags, key = _serving.bench_environment("bench", 20)
    args.key = key
    from flags.models import Flag

    extra = (
        Flag.objects.exclude(key__startswith="bench-").filter(archived=False).count()
    )
    if extra:
        print(
            f"note: the database holds {extra} other flags; bulk answers include them"
        )

    results: dict[Target, dict] = {}
    for server in SERVERS:
        if args.only and server not in args.only:
            continue
        rows = [row for row in TARGETS if row.server == server]
        if rows:
            results.update(_measure(args, wrk, key, server, rows))
    _print(args, results)
    _verdict(results)
    from bench._http_inprocess import counting_share

    counting_share(key)


if __name__ == "__main__":
    main()
