"""Audited write throughput: concurrent writers on PostgreSQL (issue 10, item 6).

Run alone::

    .venv/bin/python bench/_scale_writes.py \\
        --database-url postgres://postgres@127.0.0.1:5432/cp_scale_writes \\
        --writers 8 --seconds 10

or import it (``bench/scale.py`` does) and call ``run(args)`` with the parsed
arguments of ``build_parser()``; it returns the figures as a dict.

It (re)creates the bench database (``--reuse`` keeps it), migrates it, makes
``--environments`` environments (default: one per writer) and ``--flags``
flags, then starts ``--writers`` processes, each with its own connection.
Writer *i* changes the flags of environment *i mod E* through the real
service (``flag_state_set_percentage``: row lock, version check, validation,
audit event, ruleset bump and notice, all in one transaction) for
``--seconds``. It prints changes/s, p50 and p99 per change, then verifies
every audit chain and prints the result and how long it took. Target:
>= 300 audited changes/s with 8 writers, the chain still verifying.

``--profile N`` instead runs N changes in this process under cProfile and
prints the queries of one change and the functions that cost most.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
TARGET = 300.0
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/cp_scale_writes"


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of this benchmark (shared with bench/scale.py)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--environments",
        type=int,
        default=0,
        help="environments to spread the writers over (default: one per writer)",
    )
    parser.add_argument(
        "--flags", type=int, default=20, help="flags (each has a state per env)"
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="keep the database and its events instead of recreating it",
    )
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="profile N changes in this process instead of the concurrent run",
    )
    return parser


def _configure(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "controlplane.settings")
    os.environ.setdefault("DATABASE_CONN_MAX_AGE", "600")
    # as in production: with DEBUG on, Django also logs every query
    os.environ.setdefault("DEBUG", "false")
    os.environ.setdefault("SECRET_KEY", "bench-only-secret")


def _recreate_database(url: str, *, reuse: bool) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = parts._replace(path="/postgres").geturl()
    with psycopg.connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", [name]
        ).fetchone()
        if exists and reuse:
            return
        if exists:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def _env_key(index: int) -> str:
    return f"bench-env-{index:02d}"


def _flag_key(index: int) -> str:
    return f"bench-flag-{index:03d}"


def _setup(environments: int, flags: int) -> None:
    """Migrate and create the environments and flags that are missing."""
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Flag

    have_envs = set(Environment.objects.values_list("key", flat=True))
    for index in range(environments):
        if _env_key(index) not in have_envs:
            services.environment_create(actor=SYSTEM, key=_env_key(index))
    have_flags = set(Flag.objects.values_list("key", flat=True))
    for index in range(flags):
        if _flag_key(index) not in have_flags:
            services.flag_create(actor=SYSTEM, key=_flag_key(index))


def _percentages(count: int) -> list[float]:
    # Every consecutive pair differs, so every call is a real change.
    return [float(1 + step % 97) for step in range(count)]


def _writer(
    index: int,
    environment_key: str,
    flag_keys: list[str],
    seconds: float,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """Once every writer is ready, change this writer's flags for ``seconds``.

    A writer that cannot set up says so in one line on ``ready`` (no
    traceback) and stops.
    """
    try:
        import django

        django.setup()
        from controlplane.audit.actors import Actor
        from flags import services
        from flags.models import Environment, Flag

        actor = Actor(type="user", id=f"bench:writer-{index}", name=f"writer-{index}")
        environment = Environment.objects.get(key=environment_key)
        flags = list(Flag.objects.filter(key__in=flag_keys).order_by("key"))
        backend = _backend_pid()  # the connection is open before the start
    except Exception as exc:
        ready.put(f"writer {index}: {type(exc).__name__}: {exc}".splitlines()[0])
        return
    latencies: list[float] = []
    errors = 0
    step = index  # writers sharing an environment start on other flags
    ready.put(index)
    start.wait()
    cpu_began, backend_began = time.process_time(), _cpu_seconds(backend)
    stop_at = time.perf_counter() + seconds
    while time.perf_counter() < stop_at:
        flag = flags[step % len(flags)]
        percentage = float(1 + (step // len(flags) + index) % 97)
        began = time.perf_counter()
        try:
            services.flag_state_set_percentage(
                actor=actor, flag=flag, environment=environment, percentage=percentage
            )
        except Exception as exc:  # counted, and the first one is shown
            if errors == 0:
                print(f"writer {index}: {type(exc).__name__}: {exc}", file=sys.stderr)
            errors += 1
        else:
            latencies.append(time.perf_counter() - began)
        step += 1
    results.put(
        {
            "index": index,
            "latencies": latencies,
            "errors": errors,
            "cpu_python": time.process_time() - cpu_began,
            "cpu_postgres": _cpu_seconds(backend) - backend_began,
        }
    )


def _backend_pid() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _cpu_seconds(pid: int) -> float:
    """Return the CPU time (user + system) process ``pid`` used so far.

    The PostgreSQL backend of a writer runs on this machine, so its share
    is read from /proc; 0.0 where that cannot be read.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _assignments(writers: int, environments: int, flags: int) -> list[tuple]:
    """Return (environment key, flag keys) per writer: no two share a flag state."""
    per_env: dict[int, list[int]] = {}
    for writer in range(writers):
        per_env.setdefault(writer % environments, []).append(writer)
    plan: list[tuple] = [None] * writers  # type: ignore[list-item]
    for env, members in per_env.items():
        for slot, writer in enumerate(members):
            keys = [_flag_key(f) for f in range(flags) if f % len(members) == slot] or [
                _flag_key(slot % flags)
            ]
            plan[writer] = (_env_key(env), keys)
    return plan


def _verify() -> dict[str, Any]:
    """Verify every audit chain; return the result and the time it took."""
    import django

    django.setup()
    from controlplane.audit.models import AuditEvent
    from controlplane.audit.services import audit_chains_verify

    began = time.perf_counter()
    reports = audit_chains_verify()
    seconds = time.perf_counter() - began
    broken = [r for r in reports if not r.ok]
    return {
        "verify_ok": not broken,
        "verify_chains": len(reports),
        "verify_events": sum(r.checked for r in reports),
        "verify_seconds": seconds,
        "verify_problem": (
            f"chain {broken[0].chain}: event {broken[0].broken_id}: {broken[0].problem}"
            if broken
            else ""
        ),
        "events_total": AuditEvent.objects.count(),
    }


def _child(out: Any, target: Any, *args: Any) -> None:
    try:
        out.put(("ok", target(*args)))
    except Exception as exc:  # one line, no traceback
        out.put(("error", f"{type(exc).__name__}: {exc}".splitlines()[0]))


def _in_child(context: Any, target: Any, *args: Any) -> Any:
    """Run ``target(*args)`` in a spawned process; return its result."""
    out = context.Queue()
    process = context.Process(target=_child, args=(out, target, *args))
    process.start()
    state, value = out.get(timeout=600)
    process.join(timeout=30)
    if state == "error":
        raise RuntimeError(value)
    return value


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the concurrent writers and the verification; return the figures."""
    _configure(args.database_url)
    environments = args.environments or args.writers
    _recreate_database(args.database_url, reuse=args.reuse)
    context = multiprocessing.get_context("spawn")
    # Django is set up in child processes only, so a caller (bench/scale.py)
    # may have set it up for another database in this one.
    _in_child(context, _setup, environments, args.flags)
    results, ready, start = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(
            target=_writer,
            args=(index, env_key, flag_keys, args.seconds, ready, start, results),
        )
        for index, (env_key, flag_keys) in enumerate(
            _assignments(args.writers, environments, args.flags)
        )
    ]
    for process in processes:
        process.start()
    for _ in processes:
        state = ready.get(timeout=300)  # each has set up Django and connected
        if isinstance(state, str):
            start.set()
            for process in processes:
                process.terminate()
            raise RuntimeError(state)
    start.set()
    outcomes = [results.get(timeout=args.seconds + 120) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    latencies = [value for outcome in outcomes for value in outcome["latencies"]]
    figures: dict[str, Any] = {
        "writers": args.writers,
        "environments": environments,
        "flags": args.flags,
        "seconds": args.seconds,
        "changes": len(latencies),
        "errors": sum(outcome["errors"] for outcome in outcomes),
        "changes_per_second": len(latencies) / args.seconds,
        "p50_ms": _quantile(latencies, 0.50) * 1000,
        "p99_ms": _quantile(latencies, 0.99) * 1000,
        "mean_ms": (statistics.fmean(latencies) * 1000) if latencies else 0.0,
        "per_writer": [len(o["latencies"]) for o in sorted(outcomes, key=_by_index)],
    }
    changes = max(1, len(latencies))
    figures["cpu_python_ms"] = sum(o["cpu_python"] for o in outcomes) / changes * 1000
    figures["cpu_postgres_ms"] = (
        sum(o["cpu_postgres"] for o in outcomes) / changes * 1000
    )
    cpu_ms = figures["cpu_python_ms"] + figures["cpu_postgres_ms"]
    # what the machine's cores could do if the writers had them to themselves
    figures["cpu_bound_changes_per_second"] = (
        (os.cpu_count() or 1) * 1000 / cpu_ms if cpu_ms else 0.0
    )
    figures["load_average"] = os.getloadavg()[0]
    figures.update(_in_child(context, _verify))
    figures["target_met"] = (
        figures["changes_per_second"] >= TARGET and figures["verify_ok"]
    )
    return figures


def _by_index(outcome: dict) -> int:
    return outcome["index"]


def profile(args: argparse.Namespace) -> None:
    """Profile ``args.profile`` changes in this process; print queries and costs."""
    import cProfile
    import pstats

    _configure(args.database_url)
    _recreate_database(args.database_url, reuse=args.reuse)
    _setup(1, max(2, args.flags))
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from controlplane.audit.actors import SYSTEM
    from flags import services
    from flags.models import Environment, Flag

    environment = Environment.objects.get(key=_env_key(0))
    flag = Flag.objects.get(key=_flag_key(0))
    with CaptureQueriesContext(connection) as queries:
        services.flag_state_set_percentage(
            actor=SYSTEM, flag=flag, environment=environment, percentage=50
        )
    print(f"one change: {len(queries)} queries")
    for query in queries.captured_queries:
        print(f"  {query['time']:>6}s  {query['sql'][:150]}")
    profiler = cProfile.Profile(time.process_time)  # CPU, not waits
    began = time.perf_counter()
    profiler.enable()
    for percentage in _percentages(args.profile):
        services.flag_state_set_percentage(
            actor=SYSTEM, flag=flag, environment=environment, percentage=percentage
        )
    profiler.disable()
    elapsed = time.perf_counter() - began
    print(
        f"{args.profile} changes in one process: "
        f"{elapsed / args.profile * 1000:.2f} ms per change (under cProfile)"
    )
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def report(figures: dict[str, Any], args: argparse.Namespace) -> None:
    """Print the figures as the lines docs/performance.md quotes."""
    print(
        f"audited writes on PostgreSQL, {platform.python_version()}, "
        f"{os.cpu_count()} cores: {figures['writers']} writer processes over "
        f"{figures['environments']} environments x {figures['flags']} flags, "
        f"{figures['seconds']:g} s"
    )
    print(
        f"  changes: {figures['changes']} ({figures['errors']} errors), "
        f"{figures['changes_per_second']:.0f} changes/s "
        f"(target >= {TARGET:.0f}); per writer {figures['per_writer']}"
    )
    print(
        f"  per change: p50 {figures['p50_ms']:.2f} ms, "
        f"p99 {figures['p99_ms']:.2f} ms, mean {figures['mean_ms']:.2f} ms"
    )
    print(
        f"  CPU per change: writer {figures['cpu_python_ms']:.2f} ms + its "
        f"PostgreSQL backend {figures['cpu_postgres_ms']:.2f} ms "
        f"(all {os.cpu_count()} cores would do "
        f"{figures['cpu_bound_changes_per_second']:.0f} changes/s); "
        f"load average {figures['load_average']:.1f} at the end"
    )
    verdict = "OK" if figures["verify_ok"] else f"BROKEN ({figures['verify_problem']})"
    print(
        f"  audit verify: {verdict}, {figures['verify_events']} events in "
        f"{figures['verify_chains']} chains ({figures['events_total']} in the table) "
        f"in {figures['verify_seconds']:.2f} s"
    )
    print(f"  target met: {'yes' if figures['target_met'] else 'NO'}")


def main() -> None:
    """Parse the arguments, run, print; exit 1 when the target is missed."""
    args = build_parser().parse_args()
    if args.writers < 1 or args.seconds <= 0 or args.flags < 1:
        sys.exit("--writers, --seconds and --flags must be positive")
    try:
        if args.profile:
            profile(args)
            return
        figures = run(args)
    except Exception as exc:  # one readable line, no traceback
        first_line = (str(exc).strip().splitlines() or [""])[0]
        sys.exit(f"bench failed: {type(exc).__name__}: {first_line}")
    report(figures, args)
    sys.exit(0 if figures["target_met"] else 1)


if __name__ == "__main__":
    main()
